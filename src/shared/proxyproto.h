/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a TCP load
 * balancer sends first on each connection, naming the client it accepted. Parsing only; the
 * acceptor reads the header (see acceptor.h). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* v1 headers are at most 107 bytes; v2 ones are 16 plus a 16-bit length, but a balancer's TLVs
 * never need more than this, and a bigger header is refused rather than buffered. */
#define PROXY_HEADER_MAX 1024

typedef struct ProxyHeader {
        int version;                      /* 1 or 2 */
        bool local;                       /* LOCAL or UNSPEC (v2), UNKNOWN (v1): the
                                           * connection's own address stands */
        struct sockaddr_storage source;   /* the client, when !local */
        socklen_t source_len;
} ProxyHeader;

/* Parse the header at the start of buf. Returns its length when complete, 0 when more bytes
 * are needed (buf is a correct beginning), or -EBADMSG with *error naming the problem. Never
 * reads past len, nor past the header's own end. */
int proxy_header_parse(const uint8_t *buf, size_t len, ProxyHeader *ret, const char **error);
