/* SPDX-License-Identifier: MIT */
/*
 * header_c99.c - include/nursery.h alone, compiled as C99 with -pedantic -Werror (see
 * Makefile.am): the public header asks for no C11 and brings in what its declarations use.
 * Run by `make check`; it links and calls a few functions, so it also runs.
 */
#include <nursery.h>

int main(void)
{
    nursery_time_t deadline = nursery_after_ms(1000);
    bool later = deadline != NURSERY_FOREVER && deadline > nursery_now();
    size_t kept = NURSERY_ERRORS_KEPT;
    const char *text = nursery_strerror(NURSERY_EFAILED);
    return later && kept > 0 && text[0] != '\0' ? 0 : 1;
}
