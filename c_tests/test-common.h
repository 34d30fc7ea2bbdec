/* Small helpers shared by the C tests: a check macro that counts failures. */
#pragma once

#include <math.h>
#include <stdio.h>
#include <string.h>

static int g_checks = 0;
static int g_failures = 0;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        ++g_checks;                                                           \
        if (!(cond)) {                                                        \
            ++g_failures;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
        }                                                                     \
    } while (0)

/* Checks that the last call failed with a non-empty message. */
#define CHECK_ERROR(what)                                                     \
    CHECK(ggml_qat_last_error() != NULL && ggml_qat_last_error()[0] != '\0', \
          "%s: no error message", what)

static int test_summary(const char * name) {
    printf("%s: %d checks, %d failed\n", name, g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
