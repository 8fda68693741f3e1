/* cfgutil.c: helpers for configuration error messages (see cfgutil.h). */
#include "cfgutil.h"

#include <stdio.h>

const char *qm__cfg_type_name(const config_setting_t *s) {
  switch (config_setting_type(s)) {
  case CONFIG_TYPE_GROUP: return "a group";
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64: return "an integer";
  case CONFIG_TYPE_FLOAT: return "a float";
  case CONFIG_TYPE_STRING: return "a string";
  case CONFIG_TYPE_BOOL: return "a boolean";
  case CONFIG_TYPE_ARRAY: return "an array";
  case CONFIG_TYPE_LIST: return "a list";
  }
  return "nothing";
}

void qm__join_names(char *out, size_t outlen, const char *const *names, size_t n) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && names[i]; i++) {
    int w = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", names[i]);
    if (w < 0 || (size_t)w >= outlen - used) break;
    used += (size_t)w;
  }
}
