/*
 * cmd.h: the qmesh binary's subcommands, one file each (cmd_<name>.c).
 * Each takes argv with argv[0] the subcommand's name, prints its own
 * --help, and returns the process exit code: 0 success, 1 a failed check or
 * refused input, 2 a usage error.
 */
#ifndef QM_CMD_H
#define QM_CMD_H

int qm_cmd_run(int argc, char **argv);     /* qmesh run */
int qm_cmd_config(int argc, char **argv);  /* qmesh config check FILE */
int qm_cmd_routes(int argc, char **argv);  /* qmesh routes check FILE | show --config FILE */
int qm_cmd_dead(int argc, char **argv);    /* qmesh dead list|show|replay */
int qm_cmd_probe(int argc, char **argv);   /* qmesh probe URL */
int qm_cmd_plugin(int argc, char **argv);  /* qmesh plugin check PATH */
int qm_cmd_channel(int argc, char **argv); /* qmesh channel parse --plugin P FILE... */

#endif
