/*
 * cfgutil.h: small pieces shared by the libconfig readers (config.c,
 * routes.c, services' own groups) for their one-line error messages.
 */
#ifndef QM_CFGUTIL_H
#define QM_CFGUTIL_H

#include <libconfig.h>
#include <stddef.h>

/* "an integer", "a string", ... for "must be X (got Y)" messages. */
const char *qm__cfg_type_name(const config_setting_t *s);
/* Joins names with ", " into out (cut at outlen): the first n names, or up
 * to a NULL entry, whichever comes first. */
void qm__join_names(char *out, size_t outlen, const char *const *names, size_t n);

/* The first member of `group` whose name is not in `valid`
 * (NULL-terminated), or NULL when every member is known. */
const config_setting_t *qm__cfg_unknown_member(const config_setting_t *group,
                                               const char *const *valid);

#endif
