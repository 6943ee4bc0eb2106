/* The floor plugin's C side is iotauth's own shim (c/), so the floor enters Go exactly as iotauth does. */
#include "../../../c/iotauth_shim.c"
#include "../../../c/iotauth_marks.c"
