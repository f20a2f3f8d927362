/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Listening sockets: adopted from systemd's LISTEN_FDS (by FileDescriptorName=) or bound from
 * --interface/--port when not socket-activated; and address helpers for policy and logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct Listener {
        int fd;
        char *name;       /* "smtp", "submission", "smtps", "pop3", "pop3s"; "unknown" if unnamed */
        bool connected;   /* a connected stream socket (Accept=yes): serve it, do not accept */
        bool proxy;       /* connections start with a PROXY protocol header (--proxy-protocol) */
} Listener;

typedef struct ListenerSet {
        Listener *items;
        size_t n;
} ListenerSet;

#define LISTEN_BACKLOG 4096

/* Take the sockets passed by systemd (or the emailrelay front-end) with sd_listen_fds_with_names,
 * check each with sd_is_socket, set them non-blocking and close-on-exec, and unset LISTEN_*.
 * Returns the number adopted (0 when not socket-activated), or a negative errno; a passed fd
 * that is not a stream socket is an error (-ENOTSOCK). */
int listeners_adopt(ListenerSet *set);

/* Bind and listen on one address: interface is NULL or "" for both wildcards (0.0.0.0 and ::,
 * IPv6-only), an IP address (v4 or v6), or an absolute path for a unix socket. Port 0 picks a
 * free port. Each fd is added to set with the given name. */
int listeners_bind(ListenerSet *set, const char *interface, uint16_t port, const char *name);

/* Free names and close fds. */
void listener_set_done(ListenerSet *set);

/* Find the first listener with this name (or NULL). */
Listener *listener_set_find(ListenerSet *set, const char *name);

/* Port a listening fd is bound to (for tests binding port 0), or a negative errno. */
int socket_local_port(int fd);

/* Numeric text of a socket address: "1.2.3.4" / "::1" (ret_host) and its port. ret_host must
 * hold at least 64 bytes. For unix sockets, the host is "local" and port 0. An IPv4-mapped
 * IPv6 address is shown as IPv4. */
int sockaddr_to_host(const struct sockaddr *sa, socklen_t len, char *ret_host, size_t host_size,
                     uint16_t *ret_port);

/* Whether a peer address is one E-MailRelay lets in without --remote-clients: IPv4 loopback
 * 127/8, link-local 169.254/16, private 10/8, 172.16/12, 192.168/16; IPv6 loopback, link-local
 * fe80::/10 and ULA fc00::/7; IPv4-mapped forms of these; unix sockets. */
bool sockaddr_is_local(const struct sockaddr *sa, socklen_t len);
