/* SPDX-License-Identifier: GPL-3.0-or-later */
/* RFC 3461 xtext as E-MailRelay writes it (upper-case hex, '+' and '=' encoded), and strict
 * validation for values read from the wire. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Encode bytes outside '!'..'~', and '+' and '=', as +XX. Returns a new string. */
char *xtext_encode(const char *s, size_t len);
/* Decode; accepts lower-case hex. -EINVAL on a bad escape or a character outside '!'..'~'.
 * ret_len (optional) receives the decoded length (the result may contain NULs). */
int xtext_decode(const char *s, char **ret, size_t *ret_len);
bool xtext_is_valid(const char *s);
