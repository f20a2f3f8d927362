/* SPDX-License-Identifier: GPL-3.0-or-later */
/* DNS block lists (--dnsbl, E-MailRelay's section 5.2): one A query per list for the client's
 * reversed address, sent over UDP from the event loop, so no session ever waits on another's
 * lookup. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

typedef struct DnsblConfig {
        char **zones;                /* the lists, NULL-terminated, at least one */
        unsigned threshold;          /* listings that block; 0: check and log only */
        unsigned timeout_ms;         /* for the whole check */
        bool block_on_timeout;       /* the timeout was given negative */
        struct sockaddr_storage server; /* the DNS server */
        socklen_t server_len;
} DnsblConfig;

/* Parse "zone[,zone...][,threshold[,timeout_ms[,dns-addr:port]]]" or the old reversed form
 * "dns-addr:port,timeout_ms,threshold,zone[,zone...]". Without a DNS server, the first
 * nameserver in resolv_conf (normally "/etc/resolv.conf"; NULL means that), else 127.0.0.1:53. On error,
 * returns -EINVAL and sets *error to one line naming the problem.
 *
 * A field is a zone if it is not a number, has no ':' and its last label is not all digits; the
 * old form is recognised by a first field that is not a zone. The DNS server is numeric:
 * "1.2.3.4:53", "[2001:db8::1]:53", or without a port (53) "1.2.3.4", "[::1]" or "::1"; an IPv6
 * address without brackets is always taken whole, so "::1:53" is the address ::1:53 on port 53.
 * Limits: at most 64 zones, each a host name of at most 189 characters (so that the reversed
 * IPv6 address fits); the threshold at most 64; the timeout 1 to 3600000 ms in size. Control
 * characters in a value are shown as "\xNN" in the error. */
int dnsbl_config_parse(const char *spec, const char *resolv_conf, DnsblConfig **ret, char **error);
void dnsbl_config_free(DnsblConfig *c);

/* Whether a peer is ever checked: loopback, private (RFC 1918, ULA), link-local and unix
 * peers never are. */
bool dnsbl_applies(const struct sockaddr *peer, socklen_t len);

typedef struct DnsblResult {
        bool blocked;                /* refuse the connection */
        unsigned listed;             /* how many lists list the address */
        unsigned timed_out;          /* how many lists did not answer in time */
        const char *listed_by;       /* "zone1,zone2" of those that list it, "" if none */
        unsigned refused;            /* how many answered with an error code (see below) */
        const char *refused_by;      /* "zone1,zone2" of those, "" if none */
} DnsblResult;

/* result and its strings are valid during the call only. The check is freed when the callback
 * returns: forget the DnsblCheck pointer in it (dnsbl_cancel() on it from inside the callback is
 * allowed and does nothing). */
typedef void (*DnsblCallback)(void *userdata, const DnsblResult *result);
typedef struct DnsblCheck DnsblCheck;

/* Start checking peer against every list. cb runs exactly once, from the event loop, never
 * from inside dnsbl_check, unless the check is cancelled first.
 *
 * Outcome: listed counts the lists whose reply holds an A record in 127.0.0.0/8; a list that
 * has not answered when timeout_ms runs out, or to which the query cannot be sent, counts in
 * timed_out. blocked = threshold > 0 && (listed >= threshold || (block_on_timeout &&
 * listed + timed_out >= threshold)): with a negative timeout, a client is refused when the lists
 * that did not answer could have listed it enough, not for any timeout at all; threshold 0
 * never blocks. The callback comes as soon as the outcome is known: threshold reached, or
 * every list answered; otherwise at the timeout. Queries still unanswered at half the timeout
 * are sent again once. Replies are taken only from the server's address, with the query's
 * random id and question; anything else (SERVFAIL too) is ignored and may end as a timeout.
 * Peers of other families than AF_INET and AF_INET6 give -EAFNOSUPPORT; IPv4-mapped IPv6
 * peers are looked up as IPv4. Returns 0 or a negative errno (then cb never runs). */
int dnsbl_check(sd_event *event, const DnsblConfig *c, const struct sockaddr *peer, socklen_t len,
                DnsblCallback cb, void *userdata, DnsblCheck **ret);
/* Stop a check; its callback will not run. NULL is allowed. */
void dnsbl_cancel(DnsblCheck *check);

/* The name looked up for peer in zone: "4.3.2.1.zone" for 1.2.3.4 (also IPv4-mapped), the 32
 * reversed nibbles of an IPv6 address then the zone. 0 or -EAFNOSUPPORT. */
int dnsbl_reversed_name(const struct sockaddr *peer, socklen_t len, const char *zone, char **ret);

/* Build the A query for name with this id into buf; returns its length or -ENAMETOOLONG
 * (also for an empty label), or -ENOBUFS when buf is too small. */
int dnsbl_build_query(uint8_t *buf, size_t size, uint16_t id, const char *name);
/* Read a reply to the query above: 1 if it has an A record in 127.0.0.0/8 (listed), 0 if it
 * says the name does not exist or has no such record, 2 if its only 127/8 records are in
 * 127.255.255.0/24, which lists such as Spamhaus answer with to refuse the query (asked
 * through a public resolver, over quota): not a listing, or every client would be refused;
 * -EBADMSG if it is malformed, not a reply to that id and name, or a server failure. */
int dnsbl_parse_reply(const uint8_t *buf, size_t len, uint16_t id, const char *name);
