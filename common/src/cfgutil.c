/* cfgutil.c: helpers for configuration error messages (see cfgutil.h). */
#include "cfgutil.h"

#include <stdio.h>
#include <string.h>

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

const config_setting_t *qm__cfg_unknown_member(const config_setting_t *group,
                                               const char *const *valid) {
  int n = config_setting_length(group);
  for (int i = 0; i < n; i++) {
    const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
    const char *name = config_setting_name(m);
    size_t k = 0;
    while (valid[k] && strcmp(name, valid[k]) != 0) k++;
    if (!valid[k]) return m;
  }
  return NULL;
}
