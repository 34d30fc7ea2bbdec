// Consumer in C++ (built as C++17 and C++20).
#include "consumer-body.h"

int main() { return consumer_main() == 0 ? 0 : 1; }
