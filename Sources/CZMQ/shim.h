// libzmq's C API (Debian libzmq3-dev).
#include <zmq.h>
#include <errno.h>

// Error numbers defined as expressions (ZMQ_HAUSNUMERO + n), which Swift may not import
// as constants.
static inline int czmq_eterm(void) { return ETERM; }
static inline int czmq_efsm(void) { return EFSM; }
