#!/bin/sh
# test_sdk_example.sh: builds examples/channel-csv the way a partner does,
# out of the source tree against an installed qmesh, and runs it.
#
#   test_sdk_example.sh CMAKE BUILD_DIR SOURCE_DIR QMESH_BIN LIBDIR
#
# Fails (exit 1, with the reason on stderr) when the install lacks the
# headers or qmesh-plugin.pc, when the example compiles against anything but
# the installed headers, when it exports more than its entry point, when
# `qmesh plugin check` does not pass it, or when `qmesh channel parse` does
# not print the sample's two conversations as normalized interactions (and
# refuse a broken file with exit status 1).
set -eu

CMAKE=$1 BUILD=$2 SRC=$3 QMESH=$4 LIBDIR=$5
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qmesh-sdk-XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
PREFIX=$TMP/prefix

die() { echo "test_sdk_example: $*" >&2; exit 1; }

# 1. Install the project into the temporary prefix.
"$CMAKE" --install "$BUILD" --prefix "$PREFIX" >"$TMP/install.log" 2>&1 ||
  { cat "$TMP/install.log" >&2; die "cmake --install failed"; }
PC=$PREFIX/$LIBDIR/pkgconfig/qmesh-plugin.pc
[ -f "$PC" ] || die "no $PC after install (installed: $(cd "$PREFIX" && find . -name '*.pc'))"
for h in plugin channel rule asr; do
  cmp -s "$SRC/common/include/qmesh/$h.h" "$PREFIX/include/qmesh/$h.h" ||
    die "installed qmesh/$h.h differs from (or lacks) common/include/qmesh/$h.h"
done
[ -f "$PREFIX/share/doc/qmesh/plugin-sdk.md" ] || die "docs/plugin-sdk.md not installed to share/doc/qmesh"

# 2. pkg-config must point into the prefix, and only there.
export PKG_CONFIG_PATH="$PREFIX/$LIBDIR/pkgconfig"
unset PKG_CONFIG_LIBDIR || true
CFLAGS_PC=$(pkg-config --cflags qmesh-plugin) || die "pkg-config does not find qmesh-plugin"
CFLAGS_PC=$(echo $CFLAGS_PC)
[ -z "$(pkg-config --libs qmesh-plugin | tr -d ' ')" ] || die "qmesh-plugin.pc has Libs: a plugin links nothing"
case $CFLAGS_PC in
  -I*) ;;
  *) die "pkg-config --cflags qmesh-plugin gave \"$CFLAGS_PC\", expected one -I" ;;
esac
INC=$(cd "${CFLAGS_PC#-I}" 2>/dev/null && pwd -P) || die "include dir ${CFLAGS_PC#-I} does not exist"
[ "$INC" = "$(cd "$PREFIX/include" && pwd -P)" ] || die "include dir $INC is not the installed $PREFIX/include"

# 3. Copy the example out of the tree (so a path back into the source tree
#    cannot work by accident) and build it with CMake and with make.
cp -R "$SRC/examples/channel-csv" "$TMP/src"
rm -rf "$TMP/src/build"
"$CMAKE" -S "$TMP/src" -B "$TMP/build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$TMP/configure.log" 2>&1 ||
  { cat "$TMP/configure.log" >&2; die "configuring the example failed"; }
"$CMAKE" --build "$TMP/build" >"$TMP/build.log" 2>&1 ||
  { cat "$TMP/build.log" >&2; die "building the example failed"; }
SO=$TMP/build/channel_csv.so
[ -f "$SO" ] || die "the CMake build made no channel_csv.so"
grep -q -- "-I$PREFIX" "$TMP/build/compile_commands.json" ||
  die "the example was not compiled with -I into the installed prefix"
if grep -q -- "$SRC/common" "$TMP/build/compile_commands.json"; then
  die "the example was compiled against the source tree's headers"
fi
cp -R "$SRC/examples/channel-csv" "$TMP/src-make"
make -s -C "$TMP/src-make" >"$TMP/make.log" 2>&1 || { cat "$TMP/make.log" >&2; die "make failed"; }
[ -f "$TMP/src-make/channel_csv.so" ] || die "make built no channel_csv.so"

EXPORTS=$(nm -D --defined-only "$SO" | awk '$2 == "T" { print $3 }')
[ "$EXPORTS" = "qmesh_plugin_v1" ] || die "the plugin exports \"$EXPORTS\", expected only qmesh_plugin_v1"

# 4. The conformance checker passes both builds, the sample included.
mkdir "$TMP/samples"
cp "$SRC/examples/channel-csv/sample.csv" "$TMP/samples/"
for so in "$SO" "$TMP/src-make/channel_csv.so"; do
  "$QMESH" plugin check --samples "$TMP/samples" "$so" >"$TMP/check.out" 2>"$TMP/check.err" ||
    { cat "$TMP/check.out" "$TMP/check.err" >&2; die "qmesh plugin check failed on $so"; }
  grep -qx "sample:sample.csv: ok (2 submissions)" "$TMP/check.out" ||
    { cat "$TMP/check.out" >&2; die "the sample case did not report 2 submissions"; }
  grep -qx "parse_binary: ok (refused with QMESH_INVALID)" "$TMP/check.out" ||
    { cat "$TMP/check.out" >&2; die "random bytes were not refused"; }
done

# 5. qmesh channel parse prints the sample's conversations, normalized.
"$QMESH" channel parse --plugin "$SO" "$SRC/examples/channel-csv/sample.csv" >"$TMP/parse.out" 2>"$TMP/parse.err" ||
  { cat "$TMP/parse.out" "$TMP/parse.err" >&2; die "qmesh channel parse failed on sample.csv"; }
python3 - "$TMP/parse.out" "$SRC/examples/channel-csv/sample.csv" <<'PY' || die "qmesh channel parse printed the wrong interactions"
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 2, lines
by_id = {}
for l in lines:
    assert l["file"] == sys.argv[2], l
    ix = l["interaction"]
    assert re.fullmatch(r"ix-[0-9a-f]{32}", ix["id"]), ix
    assert ix["channel"] == "chat" and ix["tenant"] == "default", ix
    by_id[ix["external_id"]] = ix
a, b = by_id["conv-1001"], by_id["conv-1002"]
assert a["agent"] == {"id": "a-17", "name": "Dana Reyes"} and a["queue"] == "billing", a
# Rows of conv-1001 are split by a row of conv-1002 and one text holds a
# quoted line break: all three turns must be there, in offset order.
assert [t["ts_ms"] for t in a["turns"]] == [0, 9000, 21000], a["turns"]
assert a["turns"][2]["text"] == "I am sorry about that.\nLet me refund the second charge right away.", a["turns"][2]
assert b["turns"][0]["text"] == 'My router says "no signal" since this morning.', b["turns"][0]
assert a["id"] != b["id"]
PY

# A file the plugin parses but ingest would refuse (an unknown speaker), and
# one it cannot parse: one line each, exit status 1.
printf 'conversation_id,agent_id,agent_name,queue,started_at,speaker,offset_ms,text\nc-9,a-1,,,2026-11-20T14:03:11Z,robot,0,hi\n' >"$TMP/bad.csv"
printf 'not,a,header\n' >"$TMP/junk.csv"
if "$QMESH" channel parse --plugin "$SO" "$TMP/bad.csv" "$TMP/junk.csv" >"$TMP/bad.out" 2>/dev/null; then
  die "qmesh channel parse exited 0 on a refused document"
fi
python3 - "$TMP/bad.out" "$TMP/bad.csv" "$TMP/junk.csv" <<'PY' || { cat "$TMP/bad.out" >&2; die "wrong lines for refused input"; }
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, lines
assert lines[0]["file"] == sys.argv[2] and "speaker" in lines[0]["refused"], lines[0]
assert lines[1] == {"file": sys.argv[2], "error": "parse_file returned QMESH_INVALID"}, lines[1]
assert lines[2] == {"file": sys.argv[3], "error": "parse_file returned QMESH_INVALID"}, lines[2]
PY
echo "test_sdk_example: ok"
