/*
 * html_text.c: turns the HTML body of an e-mail into plain text for the
 * channel_email plugin.
 *
 * This is not an HTML parser and does not try to be one: e-mail HTML is
 * read by people, and what scoring needs is the words in reading order with
 * paragraphs kept apart. So it removes tags, drops what is never shown
 * (script, style, head, template, comments), turns block tags into line or
 * paragraph breaks, decodes character references (the HTML 4 Latin-1 and
 * common punctuation names, and every numeric form), and collapses white
 * space outside <pre>. It reads the input once, never looks before the
 * start or past the end of the buffer, and its output is never longer than
 * a small multiple of the input, so hostile HTML costs linear time at most.
 */
#include <string.h>

#include "email_internal.h"

typedef struct entity {
  const char *name;
  uint32_t cp;
} entity_t;

/* Named character references seen in real mail: the HTML 4 Latin-1 set and
 * the typographic ones mail clients produce. An unknown name stays as text,
 * as browsers leave it. */
static const entity_t entities[] = {
  {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''},
  {"nbsp", 0xA0}, {"iexcl", 0xA1}, {"cent", 0xA2}, {"pound", 0xA3}, {"curren", 0xA4},
  {"yen", 0xA5}, {"brvbar", 0xA6}, {"sect", 0xA7}, {"uml", 0xA8}, {"copy", 0xA9},
  {"ordf", 0xAA}, {"laquo", 0xAB}, {"not", 0xAC}, {"shy", 0xAD}, {"reg", 0xAE},
  {"macr", 0xAF}, {"deg", 0xB0}, {"plusmn", 0xB1}, {"sup2", 0xB2}, {"sup3", 0xB3},
  {"acute", 0xB4}, {"micro", 0xB5}, {"para", 0xB6}, {"middot", 0xB7}, {"cedil", 0xB8},
  {"sup1", 0xB9}, {"ordm", 0xBA}, {"raquo", 0xBB}, {"frac14", 0xBC}, {"frac12", 0xBD},
  {"frac34", 0xBE}, {"iquest", 0xBF}, {"Agrave", 0xC0}, {"Aacute", 0xC1}, {"Acirc", 0xC2},
  {"Atilde", 0xC3}, {"Auml", 0xC4}, {"Aring", 0xC5}, {"AElig", 0xC6}, {"Ccedil", 0xC7},
  {"Egrave", 0xC8}, {"Eacute", 0xC9}, {"Ecirc", 0xCA}, {"Euml", 0xCB}, {"Igrave", 0xCC},
  {"Iacute", 0xCD}, {"Icirc", 0xCE}, {"Iuml", 0xCF}, {"ETH", 0xD0}, {"Ntilde", 0xD1},
  {"Ograve", 0xD2}, {"Oacute", 0xD3}, {"Ocirc", 0xD4}, {"Otilde", 0xD5}, {"Ouml", 0xD6},
  {"times", 0xD7}, {"Oslash", 0xD8}, {"Ugrave", 0xD9}, {"Uacute", 0xDA}, {"Ucirc", 0xDB},
  {"Uuml", 0xDC}, {"Yacute", 0xDD}, {"THORN", 0xDE}, {"szlig", 0xDF}, {"agrave", 0xE0},
  {"aacute", 0xE1}, {"acirc", 0xE2}, {"atilde", 0xE3}, {"auml", 0xE4}, {"aring", 0xE5},
  {"aelig", 0xE6}, {"ccedil", 0xE7}, {"egrave", 0xE8}, {"eacute", 0xE9}, {"ecirc", 0xEA},
  {"euml", 0xEB}, {"igrave", 0xEC}, {"iacute", 0xED}, {"icirc", 0xEE}, {"iuml", 0xEF},
  {"eth", 0xF0}, {"ntilde", 0xF1}, {"ograve", 0xF2}, {"oacute", 0xF3}, {"ocirc", 0xF4},
  {"otilde", 0xF5}, {"ouml", 0xF6}, {"divide", 0xF7}, {"oslash", 0xF8}, {"ugrave", 0xF9},
  {"uacute", 0xFA}, {"ucirc", 0xFB}, {"uuml", 0xFC}, {"yacute", 0xFD}, {"thorn", 0xFE},
  {"yuml", 0xFF}, {"OElig", 0x152}, {"oelig", 0x153}, {"Scaron", 0x160}, {"scaron", 0x161},
  {"Yuml", 0x178}, {"fnof", 0x192}, {"circ", 0x2C6}, {"tilde", 0x2DC}, {"ensp", 0x2002},
  {"emsp", 0x2003}, {"thinsp", 0x2009}, {"zwnj", 0x200C}, {"zwj", 0x200D}, {"ndash", 0x2013},
  {"mdash", 0x2014}, {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"sbquo", 0x201A}, {"ldquo", 0x201C},
  {"rdquo", 0x201D}, {"bdquo", 0x201E}, {"dagger", 0x2020}, {"Dagger", 0x2021}, {"bull", 0x2022},
  {"hellip", 0x2026}, {"permil", 0x2030}, {"prime", 0x2032}, {"lsaquo", 0x2039}, {"rsaquo", 0x203A},
  {"euro", 0x20AC}, {"trade", 0x2122}, {"larr", 0x2190}, {"rarr", 0x2192}, {"check", 0x2713},
};

/* HTML maps numeric references 128..159 as windows-1252 would, because that
 * is what the authors of such pages meant. 0 marks an unassigned byte. */
static const uint16_t cp1252_c1[32] = {
  0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
  0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
  0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178,
};

typedef enum brk { BRK_NONE = 0, BRK_LINE = 1, BRK_PARA = 2 } brk_t;

/* Output with deferred white space: a space or break is only written when
 * text follows it, so runs collapse and nothing trails. */
typedef struct out {
  GString *s;
  int space;  /* a collapsed space is pending */
  brk_t brk;  /* the strongest break pending */
  int pre;    /* inside <pre>: white space is kept */
  int bullet; /* a list item opened: "- " goes before its first text */
} out_t;

static void flush_pending(out_t *o) {
  if (o->s->len) {
    if (o->brk == BRK_PARA) g_string_append(o->s, "\n\n");
    else if (o->brk == BRK_LINE) g_string_append_c(o->s, '\n');
    else if (o->space) g_string_append_c(o->s, ' ');
  }
  if (o->bullet) g_string_append(o->s, "- ");
  o->space = 0;
  o->brk = BRK_NONE;
  o->bullet = 0;
}

static void emit_char(out_t *o, uint32_t cp) {
  if (!o->pre && (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f' || cp == 0xA0)) {
    o->space = 1;
    return;
  }
  if (o->pre && cp == '\r') return;
  if (cp == 0xAD || cp == 0x200C || cp == 0x200D) return; /* invisible */
  if (o->pre && cp == '\n') {
    flush_pending(o);
    g_string_append_c(o->s, '\n');
    return;
  }
  flush_pending(o);
  if (cp == 0xA0) cp = ' ';
  g_string_append_unichar(o->s, (gunichar)cp);
}

static void emit_break(out_t *o, brk_t b) {
  if (b > o->brk) o->brk = b;
  o->space = 0;
}

/* Decodes the next UTF-8 character of the text; invalid bytes read as
 * U+FFFD one byte at a time, so the scan always moves forward. */
static uint32_t next_utf8(const char *p, const char *end, size_t *adv) {
  gunichar c = g_utf8_get_char_validated(p, (gssize)(end - p));
  if (c == (gunichar)-1 || c == (gunichar)-2) {
    *adv = 1;
    return 0xFFFD;
  }
  *adv = (size_t)(g_utf8_next_char(p) - p);
  return c;
}

/* Reads a character reference at p ('&'); returns the code point and its
 * length in *adv, or 0 when it is not one (the '&' is then plain text). */
static uint32_t read_entity(const char *p, const char *end, size_t *adv) {
  const char *q = p + 1;
  if (q < end && *q == '#') {
    q++;
    int hex = 0;
    if (q < end && (*q == 'x' || *q == 'X')) {
      hex = 1;
      q++;
    }
    uint32_t v = 0;
    int digits = 0;
    while (q < end && (hex ? g_ascii_isxdigit(*q) : g_ascii_isdigit(*q))) {
      int d = hex ? g_ascii_xdigit_value(*q) : *q - '0';
      if (v <= 0x10FFFF) v = v * (hex ? 16 : 10) + (uint32_t)d;
      digits++;
      q++;
    }
    if (!digits) return 0;
    if (q < end && *q == ';') q++;
    *adv = (size_t)(q - p);
    if (v >= 0x80 && v <= 0x9F) v = cp1252_c1[v - 0x80] ? cp1252_c1[v - 0x80] : 0xFFFD;
    if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) v = 0xFFFD;
    return v;
  }
  const char *name = q;
  while (q < end && q - name < 10 && g_ascii_isalnum(*q)) q++;
  size_t n = (size_t)(q - name);
  if (!n) return 0;
  for (size_t i = 0; i < sizeof entities / sizeof entities[0]; i++) {
    if (strlen(entities[i].name) == n && memcmp(entities[i].name, name, n) == 0) {
      if (q < end && *q == ';') q++;
      *adv = (size_t)(q - p);
      return entities[i].cp;
    }
  }
  return 0;
}

/* Finds `needle` (lower-case ASCII) case-insensitively in [p, end). */
static const char *find_ci(const char *p, const char *end, const char *needle) {
  size_t n = strlen(needle);
  for (; p + n <= end; p++)
    if (g_ascii_strncasecmp(p, needle, n) == 0) return p;
  return NULL;
}

static int name_is(const char *name, size_t n, const char *lit) {
  return strlen(lit) == n && g_ascii_strncasecmp(name, lit, n) == 0;
}

static int name_in(const char *name, size_t n, const char *const *list) {
  for (; *list; list++)
    if (name_is(name, n, *list)) return 1;
  return 0;
}

static const char *const para_tags[] = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table",
                                        "ul", "ol", "dl", "pre", "hr", "address", "figure", NULL};
static const char *const line_tags[] = {"br", "div", "li", "tr", "dt", "dd", "section", "article", "header",
                                        "footer", "nav", "aside", "main", "form", "caption", "center",
                                        "title", NULL};
/* Elements whose whole content is never shown. */
static const char *const hidden_tags[] = {"script", "style", "head", "template", "noscript", "title", NULL};

/* Skips a tag's attributes up to its closing '>', honouring quotes so a '>'
 * inside an attribute value does not end the tag. Returns the position
 * after '>', or end. */
static const char *skip_tag(const char *p, const char *end) {
  char quote = 0;
  for (; p < end; p++) {
    if (quote) {
      if (*p == quote) quote = 0;
    } else if (*p == '"' || *p == '\'') {
      quote = *p;
    } else if (*p == '>') {
      return p + 1;
    }
  }
  return end;
}

char *qm_email_html_to_text(const char *html, size_t len) {
  out_t o = {.s = g_string_sized_new(len / 2 + 16)};
  const char *p = html, *end = html + len;
  while (p < end) {
    if (*p == '<') {
      const char *q = p + 1;
      if (end - q >= 3 && memcmp(q, "!--", 3) == 0) {
        const char *c = find_ci(q + 3, end, "-->");
        p = c ? c + 3 : end;
        continue;
      }
      if (q < end && (*q == '!' || *q == '?')) {
        p = skip_tag(q, end);
        continue;
      }
      int closing = 0;
      if (q < end && *q == '/') {
        closing = 1;
        q++;
      }
      const char *name = q;
      while (q < end && (g_ascii_isalnum(*q) || *q == '-' || *q == ':')) q++;
      size_t n = (size_t)(q - name);
      if (!n || !g_ascii_isalpha(*name)) {
        /* A '<' that does not open a tag is text ("a < b"). */
        emit_char(&o, '<');
        p++;
        continue;
      }
      p = skip_tag(q, end);
      if (!closing && name_in(name, n, hidden_tags)) {
        /* Drop everything up to the matching end tag (or the end). */
        char close[16];
        g_snprintf(close, sizeof close, "</%.*s", (int)n, name);
        const char *c = find_ci(p, end, close);
        p = c ? skip_tag(c, end) : end;
        if (name_is(name, n, "title")) emit_break(&o, BRK_LINE);
        continue;
      }
      if (name_is(name, n, "pre")) o.pre = !closing;
      if (name_in(name, n, para_tags)) emit_break(&o, BRK_PARA);
      else if (name_in(name, n, line_tags)) emit_break(&o, BRK_LINE);
      else if (name_is(name, n, "td") || name_is(name, n, "th")) o.space = 1;
      if (!closing && name_is(name, n, "li")) o.bullet = 1;
      continue;
    }
    size_t adv = 0;
    uint32_t cp = 0;
    if (*p == '&') cp = read_entity(p, end, &adv);
    if (!cp) cp = next_utf8(p, end, &adv);
    if (cp) emit_char(&o, cp); /* a NUL byte in the text is dropped */
    p += adv;
  }
  return g_string_free(o.s, FALSE);
}
