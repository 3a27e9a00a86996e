// SPDX-License-Identifier: MIT
//
// header_cxx.cc - include/nursery.h alone, compiled as C++ with -pedantic -Werror (see
// Makefile.am) and linked with the library: the declarations are extern "C", so the calls
// below find the C functions.  Run by `make check` when configure found a C++ compiler.
#include <nursery.h>

int main()
{
    nursery_time_t deadline = nursery_after_ms(1000);
    bool later = deadline != NURSERY_FOREVER && deadline > nursery_now();
    size_t kept = NURSERY_ERRORS_KEPT;
    const char *text = nursery_strerror(NURSERY_EFAILED);
    return later && kept > 0 && text[0] != '\0' ? 0 : 1;
}
