"""Checks the bundled sample data set in samples/ (ctest samples.valid).

Every chat document and voice sidecar must pass the rules of the interaction
document (docs/protocol.md section 9), re-implemented here independently of
ingest so a sample can never silently drift from the protocol. Every e-mail
must parse with Python's email package, threads are rebuilt from Message-ID,
In-Reply-To and References across the .eml files and the mbox, and every call
script must be well formed and agree with its sidecar. Finally the behaviour
tables in samples/README.md, which later tests use as expected findings, must
name every sample exactly once and agree with what the files contain where
that can be checked mechanically (agent, queue, personal data, prohibited
phrases, profanity, bot turns).

Usage: python3 test_samples.py [SAMPLES_DIR]   (default: ../../samples)
Prints one line per failure and exits 1 when there is any.
"""
import datetime
import email
import email.policy
import glob
import json
import mailbox
import os
import re
import sys

SAMPLES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples")
FAILURES = []
CHECKS = [0]


def fail(where, what):
    FAILURES.append("%s: %s" % (where, what))


def check(cond, where, what):
    CHECKS[0] += 1
    if not cond:
        fail(where, what)
    return cond


# ------------------------------------------------------------------ section 9 rules

TOP_FIELDS = {"channel", "external_id", "tenant", "direction", "queue", "agent", "customer", "started_at",
              "ended_at", "duration_ms", "wrapup", "language", "outcomes", "attributes", "turns", "email", "media"}
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
SPEAKERS = {"agent", "customer", "bot", "system"}


def blen(s):
    return len(s.encode("utf-8"))


def parse_time(where, field, s):
    """Returns an aware datetime for an RFC 3339 UTC timestamp, or None after recording why not."""
    m = RFC3339.match(s) if isinstance(s, str) else None
    if not check(m is not None, where, "%s %r is not RFC 3339" % (field, s)):
        return None
    # Section 9 asks for UTC; a numeric offset other than +00:00 is not UTC.
    if not check(m.group(8) in ("Z", "+00:00"), where, "%s %r is not UTC" % (field, s)):
        return None
    try:
        frac = m.group(7) or ""
        t = datetime.datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=datetime.timezone.utc)
        return t + datetime.timedelta(microseconds=int((frac[1:] + "000000")[:6]) if frac else 0)
    except ValueError as e:
        fail(where, "%s %r: %s" % (field, s, e))
        return None


def check_strings(where, value, path="$"):
    """Every string must be valid UTF-8: a lone surrogate (from a \\ud800 escape) is not."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail(where, "%s is not valid UTF-8" % path)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_strings(where, k, path)
            check_strings(where, v, "%s.%s" % (path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_strings(where, v, "%s[%d]" % (path, i))


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_document(where, d, content_required=True, extra_fields=()):
    """The rules of docs/protocol.md section 9 for one interaction document."""
    if not check(isinstance(d, dict), where, "not a JSON object"):
        return
    unknown = set(d) - TOP_FIELDS - set(extra_fields)
    check(not unknown, where, "unknown top-level fields %s" % sorted(unknown))
    check_strings(where, d)
    for f in ("channel", "external_id", "agent", "started_at"):
        check(f in d, where, "required field %s missing" % f)
    ch = d.get("channel")
    check(isinstance(ch, str) and re.fullmatch(r"[a-z][a-z0-9_]*", ch) and blen(ch) <= 32, where, "bad channel %r" % ch)
    xid = d.get("external_id")
    check(isinstance(xid, str) and 1 <= blen(xid) <= 256, where, "bad external_id %r" % xid)
    if "tenant" in d:
        check(isinstance(d["tenant"], str) and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", d["tenant"]), where, "bad tenant")
    if "direction" in d:
        check(d["direction"] in ("inbound", "outbound", "internal"), where, "bad direction %r" % d["direction"])
    if "queue" in d:
        check(isinstance(d["queue"], str) and blen(d["queue"]) <= 128, where, "bad queue")
    ag = d.get("agent")
    if check(isinstance(ag, dict), where, "agent is not an object"):
        check(isinstance(ag.get("id"), str) and 1 <= blen(ag["id"]) <= 128, where, "bad agent.id")
        for k in ("name", "team"):
            if k in ag:
                check(isinstance(ag[k], str), where, "agent.%s is not a string" % k)
    if "customer" in d:
        check(isinstance(d["customer"], dict), where, "customer is not an object")
    start = parse_time(where, "started_at", d.get("started_at"))
    if start:
        check(start >= datetime.datetime(1990, 1, 1, tzinfo=datetime.timezone.utc), where, "started_at before 1990")
        check(start <= datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1), where,
              "started_at more than a day in the future")
    if "ended_at" in d:
        end = parse_time(where, "ended_at", d["ended_at"])
        if start and end:
            check(end >= start, where, "ended_at before started_at")
    if "duration_ms" in d:
        dm = d["duration_ms"]
        check(is_int(dm) and 0 <= dm <= 7 * 86400 * 1000, where, "bad duration_ms %r" % dm)
    if "wrapup" in d:
        check(isinstance(d["wrapup"], str) and blen(d["wrapup"]) <= 128, where, "bad wrapup")
    if "language" in d:
        check(isinstance(d["language"], str) and BCP47.match(d["language"]), where, "bad language %r" % d["language"])
    if "outcomes" in d:
        o = d["outcomes"]
        if check(isinstance(o, dict), where, "outcomes is not an object"):
            check(set(o) <= {"csat", "nps", "fcr"}, where, "unknown outcomes %s" % sorted(set(o) - {"csat", "nps", "fcr"}))
            if "csat" in o:
                check(is_int(o["csat"]) and 1 <= o["csat"] <= 5, where, "csat out of 1-5")
            if "nps" in o:
                check(is_int(o["nps"]) and 0 <= o["nps"] <= 10, where, "nps out of 0-10")
            if "fcr" in o:
                check(isinstance(o["fcr"], bool), where, "fcr is not a boolean")
    if "attributes" in d:
        a = d["attributes"]
        if check(isinstance(a, dict) and len(a) <= 64, where, "attributes is not an object of at most 64 entries"):
            for k, v in a.items():
                check(blen(k) <= 64, where, "attribute key %r longer than 64 bytes" % k)
                ok = (isinstance(v, str) and blen(v) <= 1024) or isinstance(v, (bool, int, float))
                check(ok, where, "attribute %r is not a string (<= 1024 bytes), number or boolean" % k)
    present = [k for k in ("turns", "email", "media") if k in d]
    if content_required:
        check(len(present) == 1, where, "exactly one of turns, email, media must be present (found %s)" % present)
    else:
        check(not present, where, "a sidecar carries no content (found %s)" % present)
    if "turns" in d:
        turns = d["turns"]
        if check(isinstance(turns, list), where, "turns is not an array"):
            last = 0
            for i, t in enumerate(turns):
                w = "%s turn %d" % (where, i)
                if not check(isinstance(t, dict), w, "not an object"):
                    continue
                check(set(t) <= {"speaker", "ts_ms", "text"}, w, "unknown fields %s" % sorted(set(t) - {"speaker", "ts_ms", "text"}))
                check(t.get("speaker") in SPEAKERS, w, "speaker %r not one of %s" % (t.get("speaker"), sorted(SPEAKERS)))
                ts = t.get("ts_ms")
                if check(is_int(ts) and ts >= 0, w, "ts_ms %r is not a non-negative integer" % ts):
                    check(ts >= last, w, "ts_ms %d decreases (previous %d)" % (ts, last))
                    last = ts
                check(isinstance(t.get("text"), str) and 0 < blen(t["text"]) <= 65536, w, "text missing or over 64 KiB")
            if start and "ended_at" in d:
                end = parse_time(where, "ended_at", d["ended_at"])
                if end:
                    check(start + datetime.timedelta(milliseconds=last) <= end, where, "last turn after ended_at")


# ------------------------------------------------------------------ chat

def load_chats():
    chats = {}
    for path in sorted(glob.glob(os.path.join(SAMPLES, "chat", "*.json"))):
        name = "chat/" + os.path.basename(path)
        raw = open(path, "rb").read()
        check(len(raw) <= 4096 * 1024, name, "larger than ingest.max_document_kb")
        try:
            chats[name] = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            fail(name, "does not parse: %s" % e)
    jsonl = sorted(glob.glob(os.path.join(SAMPLES, "chat", "*.jsonl")))
    check(len(jsonl) == 1, "chat/", "expected exactly one .jsonl file, found %d" % len(jsonl))
    for path in jsonl:
        lines = open(path, "rb").read().decode("utf-8").split("\n")
        check(lines[-1] == "", path, "does not end with a newline")
        lines = lines[:-1] if lines and lines[-1] == "" else lines
        check(len(lines) == 5, path, "expected 5 conversations, found %d" % len(lines))
        for i, line in enumerate(lines, 1):
            name = "chat/%s:%d" % (os.path.basename(path), i)
            try:
                chats[name] = json.loads(line)
            except ValueError as e:
                fail(name, "does not parse: %s" % e)
    return chats


def check_chats(chats):
    check(len(chats) >= 30, "chat/", "only %d chat conversations, want at least 30" % len(chats))
    ids = {}
    for name, d in chats.items():
        check_document(name, d)
        check(d.get("channel") == "chat", name, "channel is %r, not chat" % d.get("channel"))
        check(d.get("tenant") == "northwind", name, "tenant is not northwind")
        check("turns" in d and 6 <= len(d["turns"]) <= 30, name, "want 6-30 turns")
        check(d.get("external_id") not in ids, name, "external_id also used by %s" % ids.get(d.get("external_id")))
        ids[d.get("external_id")] = name
        if "turns" in d:
            speakers = {t.get("speaker") for t in d["turns"] if isinstance(t, dict)}
            check({"agent", "customer"} <= speakers, name, "needs both agent and customer turns")


# ------------------------------------------------------------------ e-mail

def body_text(msg):
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = part.get_content()
    if part.get_content_type() == "text/html":
        text = re.sub(r"<[^>]+>", " ", text)
    return text


def own_text(text):
    """The part of a message its sender wrote: drops quoted lines and everything after 'On ..., X wrote:'."""
    out = []
    for line in text.split("\n"):
        if re.match(r"^On .*wrote:\s*$", line):
            break
        if not line.startswith(">"):
            out.append(line)
    return "\n".join(out)


def load_emails():
    msgs = []  # (where, message)
    for path in sorted(glob.glob(os.path.join(SAMPLES, "email", "*.eml"))):
        where = "email/" + os.path.basename(path)
        with open(path, "rb") as f:
            msgs.append((where, email.message_from_binary_file(f, policy=email.policy.default)))
    boxes = sorted(glob.glob(os.path.join(SAMPLES, "email", "*.mbox")))
    check(len(boxes) >= 1, "email/", "no .mbox file")
    for path in boxes:
        raw = open(path, "rb").read()
        check(raw.startswith(b"From "), path, "does not start with a 'From ' separator line")
        box = mailbox.mbox(path)
        for i, key in enumerate(box.keys(), 1):
            where = "email/%s#%d" % (os.path.basename(path), i)
            msgs.append((where, email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)))
        box.close()
    return msgs


def check_emails(msgs, agents):
    by_id = {}
    features = set()
    for where, m in msgs:
        for h in ("From", "To", "Subject", "Date", "Message-ID"):
            check(m[h] is not None, where, "no %s header" % h)
        for d in m.defects:
            fail(where, "parse defect %s" % type(d).__name__)
        try:
            text = body_text(m)
        except (LookupError, ValueError) as e:
            fail(where, "body does not decode: %s" % e)
            text = ""
        check(text.strip() != "", where, "empty body")
        mid = (m["Message-ID"] or "").strip()
        check(re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", mid), where, "Message-ID %r is not <local@domain>" % mid)
        check(mid not in by_id, where, "Message-ID %s also in %s" % (mid, by_id.get(mid, ("",))[0]))
        check(email.utils.parsedate_to_datetime(m["Date"]) is not None, where, "Date does not parse")
        sender = email.utils.parseaddr(str(m["From"]))[1]
        domain = sender.rsplit("@", 1)[-1]
        is_agent = domain == "support.northwind.example"
        check(domain.endswith(".example"), where, "From %r is not in a .example domain" % sender)
        check(m["X-Northwind-Queue"] in ("billing", "tech-support", "sales", "retention"), where,
              "X-Northwind-Queue %r is not a Northwind queue" % m["X-Northwind-Queue"])
        if is_agent:
            check(m["X-Northwind-Agent-Id"] in agents, where, "agent message without a known X-Northwind-Agent-Id")
        else:
            check(m["X-Northwind-Agent-Id"] is None, where, "customer message carries X-Northwind-Agent-Id")
        for part in m.walk():
            ct = part.get_content_type()
            if ct == "multipart/alternative":
                features.add("alternative")
            if part.get_content_maintype() == "text":
                cte = (part["Content-Transfer-Encoding"] or "7bit").lower()
                features.add(cte)
                features.add((part.get_content_charset() or "us-ascii").lower())
            if part.get_filename():
                features.add("attachment")
        if m.get_content_type() == "text/html":
            features.add("html-only")
        by_id[mid] = (where, m, is_agent, own_text(text))
    for f in ("alternative", "html-only", "base64", "quoted-printable", "iso-8859-1", "windows-1252", "attachment"):
        check(f in features, "email/", "no message exercises %s" % f)

    # Threads: union of each message with everything it names in In-Reply-To and References.
    parent = {mid: mid for mid in by_id}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for mid, (where, m, _, _) in by_id.items():
        refs = re.findall(r"<[^<>]+>", " ".join(str(m[h] or "") for h in ("In-Reply-To", "References")))
        for r in refs:
            if check(r in by_id, where, "refers to %s, which is in no sample" % r):
                parent[find(r)] = find(mid)
        if m["In-Reply-To"]:
            irt = by_id.get(str(m["In-Reply-To"]).strip())
            if irt:
                check(email.utils.parsedate_to_datetime(irt[1]["Date"]) < email.utils.parsedate_to_datetime(m["Date"]),
                      where, "dated before the message it replies to")
    threads = {}
    for mid in by_id:
        threads.setdefault(find(mid), []).append(by_id[mid])
    check(len(threads) >= 20, "email/", "only %d threads, want at least 20" % len(threads))
    files_eml = {os.path.basename(p) for p in glob.glob(os.path.join(SAMPLES, "email", "*.eml"))}
    mbox_threads = sum(1 for t in threads.values() if any(".mbox#" in w for w, _, _, _ in t))
    check(mbox_threads >= 3, "email/", "the mbox holds %d threads, want several" % mbox_threads)
    check(sum(1 for t in threads.values() if len({w for w, _, _, _ in t if w.endswith(".eml")}) > 1) >= 5,
          "email/", "fewer than 5 threads spread across several .eml files")
    for t in threads.values():
        check(1 <= len(t) <= 5, t[0][0], "thread of %d messages, want 1-5" % len(t))
        check(len({str(m["X-Northwind-Queue"]) for _, m, _, _ in t}) == 1, t[0][0], "thread spans several queues")
    check(files_eml, "email/", "no .eml files")
    return list(threads.values())


# ------------------------------------------------------------------ voice

SCRIPT_LINE = re.compile(r"^(\d{2}):(\d{2}(?:\.\d+)?)\s+(?:(agent|customer):\s*(\S.*)|(end))\s*$")


def parse_script(path):
    where = "voice/calls/" + os.path.basename(path)
    utts, end, last = [], None, -1.0
    for lineno, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = SCRIPT_LINE.match(line)
        if not check(m is not None, "%s:%d" % (where, lineno), "not 'MM:SS.s agent|customer: text' or 'MM:SS.s end'"):
            continue
        check(end is None, "%s:%d" % (where, lineno), "line after the end line")
        t = int(m.group(1)) * 60 + float(m.group(2))
        check(t >= last, "%s:%d" % (where, lineno), "starts before the line above")
        last = t
        if m.group(5):
            end = t
        else:
            utts.append((t, m.group(3), m.group(4)))
    check(end is not None, where, "no end line")
    return utts, end


def check_voice(agents):
    calls = {}
    scripts = sorted(glob.glob(os.path.join(SAMPLES, "voice", "calls", "*.script.txt")))
    check(len(scripts) >= 10, "voice/calls/", "only %d call scripts, want at least 10" % len(scripts))
    for path in scripts:
        call_id = os.path.basename(path)[:-len(".script.txt")]
        where = "voice/calls/%s.json" % call_id
        utts, end = parse_script(path)
        check({"agent", "customer"} <= {s for _, s, _ in utts}, path, "needs both speakers")
        if end is not None:
            check(30 <= end <= 90, path, "call is %.1f s long, want 30-90 s" % end)
        sidecar = os.path.join(SAMPLES, "voice", "calls", call_id + ".json")
        if not check(os.path.exists(sidecar), where, "no sidecar for %s" % path):
            continue
        try:
            d = json.load(open(sidecar, encoding="utf-8"))
        except ValueError as e:
            fail(where, "does not parse: %s" % e)
            continue
        check_document(where, d, content_required=False, extra_fields=("layout",))
        check(d.get("channel") == "voice", where, "channel is not voice")
        check(d.get("layout") == {"agent": "left", "customer": "right"}, where, "layout is not agent left, customer right")
        check(d.get("agent", {}).get("id") in agents, where, "unknown agent")
        if end is not None:
            check(d.get("duration_ms") == int(round(end * 1000)), where, "duration_ms does not match the script's end line")
            s = parse_time(where, "started_at", d.get("started_at"))
            e = parse_time(where, "ended_at", d.get("ended_at")) if "ended_at" in d else None
            if s and e:
                check(abs((e - s).total_seconds() - end) < 0.002, where, "ended_at - started_at differs from the script")
        calls[call_id] = (d, utts)
    return calls


# ------------------------------------------------------------------ README tables

PROHIBITED = ["calm down", "not my problem", "nothing i can do", "should have read", "like i said", "whatever",
              "not my department"]
PROFANITY = re.compile(r"\b(damn|crap|hell)\b", re.I)
CARD = re.compile(r"\b(?:\d[ -]?){15}\d\b")
PHONE = re.compile(r"555[ .-]?01\d\d\b")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.example\b")


def read_tables():
    """Rows of the README's behaviour tables: id -> (section, file, agent ids, queue, tag set)."""
    rows, section = {}, None
    for line in open(os.path.join(SAMPLES, "README.md"), encoding="utf-8"):
        m = re.match(r"^### (Chat|E-mail|Voice)\s*$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\| `([a-z]+-\d+)` \|(.*)\|\s*$", line)
        if m and section:
            cells = [c.strip() for c in m.group(2).split("|")]
            if not check(len(cells) == 6, "README.md", "row %s has %d cells, want 7" % (m.group(1), len(cells) + 1)):
                continue
            check(m.group(1) not in rows, "README.md", "row %s appears twice" % m.group(1))
            tags = set()
            for c in cells[3:6]:
                tags |= set(c.split()) - {"-"}
            rows[m.group(1)] = (section, cells[0], re.findall(r"a-\d+", cells[1]), cells[2], tags)
    return rows


def check_tags(where, tags, customer_text, agent_text, has_bot=None):
    """The tags that follow from the text itself must be exactly right, both ways."""
    lt = agent_text.lower()
    for tag, present in (("prohibited", any(p in lt for p in PROHIBITED)),
                         ("profanity", bool(PROFANITY.search(agent_text))),
                         ("pii-card", bool(CARD.search(customer_text))),
                         ("pii-phone", bool(PHONE.search(customer_text))),
                         ("pii-email", bool(EMAIL.search(customer_text))),
                         ("bot-handoff", has_bot)):
        if present is None:
            continue
        check(present == (tag in tags), where, "README says %s%s but the text %s" % (
            "" if tag in tags else "no ", tag, "has it" if present else "does not"))
    for a, b in (("greeting", "no-greeting"), ("id-verify", "no-id-verify"), ("resolved", "unresolved"),
                 ("closing", "no-closing"), ("hold-ok", "hold-bad"), ("angry-calmed", "angry-escalated"),
                 ("disclosure", "no-disclosure")):
        check(not (a in tags and b in tags), where, "tagged both %s and %s" % (a, b))


def spoken_digits(text):
    # Scripts spell numbers digit by digit ("4 1 1 1, 1 1 1 1"); join them so the same patterns apply.
    return re.sub(r"(?<=\d)[ ,]+(?=\d)", "", text)


def check_readme(chats, threads, calls):
    rows = read_tables()
    by_xid = {d.get("external_id"): (name, d) for name, d in chats.items()}
    seen_chats = set()
    for rid, (section, file_, ags, queue, tags) in rows.items():
        where = "README.md row %s" % rid
        if section == "Chat":
            name, d = by_xid.get("nw-" + rid, (None, None))
            if not check(d is not None, where, "no chat with external_id nw-%s" % rid):
                continue
            check(file_ == name, where, "file %s but the chat is in %s" % (file_, name))
            seen_chats.add(name)
            check(ags == [d["agent"]["id"]] and queue == d.get("queue"), where, "agent or queue differ from the document")
            turns = d.get("turns", [])
            check_tags(where, tags, " ".join(t["text"] for t in turns if t["speaker"] == "customer"),
                       " ".join(t["text"] for t in turns if t["speaker"] == "agent"),
                       any(t["speaker"] == "bot" for t in turns))
            check(("outbound" in tags) == (d.get("direction") == "outbound"), where, "outbound tag vs direction")
        elif section == "Voice":
            if not check(rid in calls, where, "no call script"):
                continue
            d, utts = calls[rid]
            check(ags == [d["agent"]["id"]] and queue == d.get("queue"), where, "agent or queue differ from the sidecar")
            check_tags(where, tags, spoken_digits(" ".join(t for _, s, t in utts if s == "customer")),
                       " ".join(t for _, s, t in utts if s == "agent"))
            agent_text = " ".join(t for _, s, t in utts if s == "agent").lower()
            check(("disclosure" in tags) == ("recorded" in agent_text), where, "disclosure tag vs the script")
        elif section == "E-mail":
            ticket = re.search(r"NW-\d+", file_)
            listed = set(re.findall(r"em-\d+-\d+\.eml", file_))
            match = [t for t in threads
                     if (ticket and any(ticket.group(0) in str(m["Subject"]) for _, m, _, _ in t))
                     or (listed and {w.split("/")[-1] for w, _, _, _ in t} == listed)]
            if not check(len(match) == 1, where, "names no single thread (ticket or files)"):
                continue
            t = match[0]
            if listed:
                check({w.split("/")[-1] for w, _, _, _ in t} == listed, where, "files differ from the thread")
            n = re.search(r"\((\d+) msg", file_)
            check(n and int(n.group(1)) == len(t), where, "message count differs from the thread (%d)" % len(t))
            check(sorted({str(m["X-Northwind-Agent-Id"]) for _, m, a, _ in t if a}) == sorted(ags), where,
                  "agents differ from X-Northwind-Agent-Id")
            check({str(m["X-Northwind-Queue"]) for _, m, _, _ in t} == {queue}, where, "queue differs from X-Northwind-Queue")
            check_tags(where, tags, " ".join(txt for _, _, a, txt in t if not a), " ".join(txt for _, _, a, txt in t if a))
            check(("unanswered" in tags) == (not any(a for _, _, a, _ in t)), where, "unanswered tag vs the thread")
            rows[rid] = rows[rid] + (id(t),)
    check(seen_chats == set(chats), "README.md", "chats missing from the table: %s" % sorted(set(chats) - seen_chats))
    check({r for r, v in rows.items() if v[0] == "Voice"} == set(calls), "README.md", "calls missing from the table")
    covered = {v[5] for v in rows.values() if v[0] == "E-mail" and len(v) > 5}
    check(covered == {id(t) for t in threads}, "README.md", "%d e-mail threads are not in the table" % (len(threads) - len(covered)))


def main():
    agents = {"a-101", "a-102", "a-103", "a-201", "a-202", "a-203", "a-301", "a-302", "a-303"}
    chats = load_chats()
    check_chats(chats)
    for d in chats.values():
        if isinstance(d, dict) and isinstance(d.get("agent"), dict):
            check(d["agent"].get("id") in agents, d.get("external_id", "?"), "unknown agent %r" % d["agent"].get("id"))
    threads = check_emails(load_emails(), agents)
    calls = check_voice(agents)
    check_readme(chats, threads, calls)
    gi = os.path.join(SAMPLES, ".gitignore")
    check(os.path.exists(gi) and "voice/*.wav" in open(gi).read(), "samples/.gitignore", "does not ignore voice/*.wav")
    for f in FAILURES:
        print("FAIL " + f)
    print("samples: %d chats, %d e-mail threads, %d calls; %d checks, %d failed" % (
        len(chats), len(threads), len(calls), CHECKS[0], len(FAILURES)))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
