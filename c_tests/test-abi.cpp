// The ABI test compiled as C++17.
#include "test-abi.c"
