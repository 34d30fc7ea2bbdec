/* Calls ggml_qat_calibrate_model on a model that does not exist, with
 * calibrator_path NULL (the caller also leaves GGML_QAT_CALIBRATE unset):
 * the call must fail, and its message is printed for the test to check
 * that the installed calibrator was found and ran.
 * Usage: find-calibrator MISSING_MODEL OUTPUT */
#include <stdio.h>

#include "ggml-qat.h"

int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: find-calibrator MISSING_MODEL OUTPUT\n");
        return 2;
    }
    ggml_qat_calibrate_params_t p = ggml_qat_calibrate_default_params();
    p.calibrator_path = NULL;
    p.n_threads = 1;
    if (ggml_qat_calibrate_model(argv[1], argv[2], &p)) {
        fprintf(stderr, "ggml_qat_calibrate_model succeeded on a missing model\n");
        return 1;
    }
    printf("%s\n", ggml_qat_last_error());
    return 0;
}
