#include "../c/iotauth_memo.c"
