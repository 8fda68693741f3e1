/*
 * fixture_v2.c: a plugin built for a future ABI major. It exports only
 * `qmesh_plugin_v2`, whose descriptor layout this qmesh cannot know, so the
 * loader must refuse it by the symbol's name without calling it. Calling it
 * anyway would abort the test.
 */
#include <stdlib.h>

#include <qmesh/plugin.h>

QMESH_EXPORT const void *qmesh_plugin_v2(void);

QMESH_EXPORT const void *qmesh_plugin_v2(void) {
  abort();
  return NULL;
}
