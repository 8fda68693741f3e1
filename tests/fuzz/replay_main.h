/*
 * replay_main.h: the corpus replay the fuzz drivers share when built with
 * -DQM_FUZZ_CORPUS_MAIN (fuzz_chat_json, fuzz_webhook, fuzz_email,
 * fuzz_envelope; replay_main.c is compiled into each *_corpus program).
 *
 * Each driver keeps its own main and its own checks: the replay only reads
 * the files and directories named on the command line and hands every file
 * to the driver, which runs LLVMFuzzerTestOneInput on it and checks the
 * outcome against what the seed's name promises.
 */
#ifndef QMESH_TESTS_FUZZ_REPLAY_MAIN_H
#define QMESH_TESTS_FUZZ_REPLAY_MAIN_H

#include <stddef.h>
#include <stdint.h>

/* Called once per replayed file: `path` as it was reached, `name` its last
 * component, `data` its whole content. */
typedef void (*qm_replay_fn)(const char *path, const char *name, const uint8_t *data, size_t n);

/* Replays argv[1..argc): a file is handed to `fn`; a directory's regular
 * files are handed over in name order, leaving out those whose name starts
 * with '.'. Returns 0, or -1 when a path could not be found, listed or read
 * (said on stderr; the rest is still replayed). */
int qm_replay_paths(int argc, char **argv, qm_replay_fn fn);

#endif
