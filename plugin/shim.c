#include "../c/iotauth_shim.c"
#include "../c/iotauth_marks.c"
