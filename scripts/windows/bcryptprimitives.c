/* Stub bcryptprimitives.dll for Wine 8.0, which lacks it. Rust std >= 1.78 imports
 * ProcessPrng from this DLL; without it every Rust exe fails to load (c0000135).
 * Installed only into the test Wine prefix, never shipped: real Windows 10+ has the DLL. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID, ULONG); /* RtlGenRandom */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE p, SIZE_T n) {
    while (n) {
        ULONG k = n > 0x10000000 ? 0x10000000 : (ULONG)n;
        if (!SystemFunction036(p, k)) return FALSE;
        p += k;
        n -= k;
    }
    return TRUE;
}
