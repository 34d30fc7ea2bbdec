/* Consumer in C11. */
#include "consumer-body.h"

int main(void) { return consumer_main() == 0 ? 0 : 1; }
