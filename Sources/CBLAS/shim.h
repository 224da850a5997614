// OpenBLAS's CBLAS interface, plus its extensions (openblas_get_corename,
// openblas_set_num_threads) declared in the same header.
#include <cblas.h>
