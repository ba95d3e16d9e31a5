/* A stand-in for Windows' bcryptprimitives.dll, which Wine 8 lacks. Rust's std imports
 * ProcessPrng from it (the random seed of HashMap), so without it no Rust test binary starts.
 * Built by scripts/test-windows.sh and copied into the throwaway Wine prefix; never shipped. */
#include <windows.h>

/* advapi32's RtlGenRandom, which Wine does implement. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
