#include "../c/iotauth_shim.c"
