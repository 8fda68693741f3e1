/*
 * replay_main.c: reads corpus files and directories for the fuzz drivers'
 * *_corpus programs (replay_main.h).
 */
#define _GNU_SOURCE
#include "replay_main.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reads a whole file into a new buffer; -1 when it cannot be read. */
static int read_file(const char *path, uint8_t **out, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 1 << 16, len = 0, got;
  uint8_t *buf = malloc(cap);
  while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      uint8_t *bigger = realloc(buf, cap *= 2);
      if (!bigger) free(buf);
      buf = bigger;
    }
  }
  int bad = ferror(f) || !buf;
  fclose(f);
  if (bad) {
    free(buf);
    return -1;
  }
  *out = buf;
  *n = len;
  return 0;
}

static int replay_file(const char *path, const char *name, qm_replay_fn fn) {
  uint8_t *data = NULL;
  size_t n = 0;
  if (read_file(path, &data, &n) != 0) {
    fprintf(stderr, "%s: cannot read\n", path);
    return -1;
  }
  fn(path, name, data, n);
  free(data);
  return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int replay(const char *path, qm_replay_fn fn) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s: not found\n", path);
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    const char *slash = strrchr(path, '/');
    return replay_file(path, slash ? slash + 1 : path, fn);
  }
  struct dirent **list;
  int n = scandir(path, &list, NULL, by_name);
  if (n < 0) {
    fprintf(stderr, "%s: cannot list\n", path);
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < n; i++) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", path, list[i]->d_name);
    if (list[i]->d_name[0] != '.' && stat(full, &st) == 0 && S_ISREG(st.st_mode))
      if (replay_file(full, list[i]->d_name, fn) != 0) rc = -1;
    free(list[i]);
  }
  free(list);
  return rc;
}

int qm_replay_paths(int argc, char **argv, qm_replay_fn fn) {
  int rc = 0;
  for (int i = 1; i < argc; i++)
    if (replay(argv[i], fn) != 0) rc = -1;
  return rc;
}
