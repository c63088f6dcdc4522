# yaml2files.awk: the YAML subset cloud-init users write, flattened into one file per scalar.
#
# Usage: awk -v out=DIR -f yaml2files.awk FILE
#
# Every scalar is written, byte for byte, to DIR/<path> where <path> joins mapping keys and
# sequence indexes with dots: "hostname", "ssh_authorized_keys.0", "ssh_keys.ed25519_private",
# "runcmd.1.0" (an argv list item). Nothing is ever evaluated: values only become file contents,
# so no value can inject shell or YAML. Key characters outside [A-Za-z0-9_-] become "_".
#
# Supported: block mappings and sequences (including sequences at their key's indentation, as
# PyYAML writes them, "- - a" nested lists and "- key: v" maps in lists), plain, 'single' and
# "double" quoted scalars (also over several lines), block literals "|" and folded ">" with
# chomping indicators (-, +) and explicit indentation, one-line flow sequences ([a, 'b c']),
# comments, "---". Not supported (ignored): anchors/aliases, tags, flow mappings, complex keys.

BEGIN { depth = 0; cind[0] = -1; cmin[0] = -2; cpath[0] = ""; cidx[0] = 0
        blk = 0; pend = 0; nfiles = 0 }

function fname(p,   s) { s = p; gsub(/[^A-Za-z0-9_.-]/, "_", s); return out "/" s }
function emit(p, v,   f) { if (p == "") return; f = fname(p); printf "%s", v > f; close(f) }
function join(a, b) { return a == "" ? b : a "." b }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t\r]+$/, "", s); return s }

# Remove a " #comment" that follows a plain or quoted scalar on its line.
function strip_comment(s,   i, q, c, n) {
  q = substr(s, 1, 1)
  if (q == "'" || q == "\"") {
    n = length(s)
    for (i = 2; i <= n; i++) {
      c = substr(s, i, 1)
      if (q == "\"" && c == "\\") { i++; continue }
      if (c == q) { if (q == "'" && substr(s, i + 1, 1) == "'") { i++; continue } return substr(s, 1, i) }
    }
    return s
  }
  if (substr(s, 1, 1) == "#") return ""
  if (match(s, /[ \t]#/)) s = substr(s, 1, RSTART - 1)
  return rtrim(s)
}

function unescape_dq(s,   r, i, n, c, d) {
  r = ""; n = length(s)
  for (i = 1; i <= n; i++) {
    c = substr(s, i, 1)
    if (c == "\001") continue
    if (c != "\\") { r = r c; continue }
    d = substr(s, ++i, 1)
    if (d == "n") r = r "\n"; else if (d == "t") r = r "\t"; else if (d == "r") r = r "\r"
    else if (d == "0") r = r ""; else if (d == "e") r = r "\033"; else if (d == " ") r = r " "
    else if (d == "/") r = r "/"; else if (d == "\"") r = r "\""; else if (d == "\\") r = r "\\"
    else r = r "\\" d
  }
  return r
}

# Turn the raw text of a flow scalar into its value; "" for null.
function scalar(raw,   q, s) {
  ISNULL = 0
  raw = strip_comment(rtrim(raw))
  q = substr(raw, 1, 1)
  if (q == "'") { s = substr(raw, 2, length(raw) - 2); gsub(/''/, "'", s); return s }
  if (q == "\"") return unescape_dq(substr(raw, 2, length(raw) - 2))
  if (raw == "" || raw == "~" || raw == "null" || raw == "Null" || raw == "NULL") { ISNULL = 1; return "" }
  return raw
}

# Emit a (possibly flow-sequence) value at path p.
function value(p, raw,   s, n, i, c, q, item, idx) {
  raw = rtrim(raw)
  if (substr(raw, 1, 1) == "[") {
    s = strip_comment(raw); sub(/^\[/, "", s); sub(/\][ \t]*$/, "", s)
    n = length(s); q = ""; item = ""; idx = 0
    for (i = 1; i <= n; i++) {
      c = substr(s, i, 1)
      if (q != "") { item = item c; if (c == "\\" && q == "\"") { item = item substr(s, ++i, 1) } else if (c == q) q = ""; continue }
      if (c == "'" || c == "\"") { q = c; item = item c; continue }
      if (c == ",") { emit(join(p, idx++), scalar(ltrim(item))); item = ""; continue }  # null items become ""
      item = item c
    }
    if (ltrim(item) != "") emit(join(p, idx), scalar(ltrim(item)))
    return
  }
  if (raw == "{}") return
  s = scalar(raw)
  if (!ISNULL) emit(p, s)
}

function flush_pending() { if (pend) { value(ppath, pval); pend = 0 } }

function finish_block(   v, n) {
  v = bval
  if (bchomp == "-") sub(/\n+$/, "", v)
  else if (bchomp != "+") { sub(/\n+$/, "", v); if (v != "") v = v "\n" }
  if (bstyle == ">") v = fold(v)
  emit(bpath, v); blk = 0
}

# Folded style: single newlines between non-indented lines become spaces.
function fold(v,   lines, n, i, r, prev_more) {
  n = split(v, lines, "\n"); r = ""
  for (i = 1; i <= n; i++) {
    if (i > 1) {
      if (lines[i - 1] != "" && lines[i] != "" && substr(lines[i], 1, 1) != " " && substr(lines[i - 1], 1, 1) != " ") r = r " "
      else if (lines[i - 1] == "" ) r = r
      else r = r "\n"
    }
    r = r lines[i]
  }
  return r
}

function push(p, minind, ind) { depth++; cpath[depth] = p; cmin[depth] = minind; cind[depth] = ind; cidx[depth] = 0; ctype[depth] = "" }

function start_value(p, rest, entind,   m) {
  rest = ltrim(rest)
  if (rest == "" || substr(rest, 1, 1) == "#") { push(p, entind, -1); return }
  if (rest ~ /^[|>]/) {
    blk = 1; bpath = p; bval = ""; bstyle = substr(rest, 1, 1); bparent = entind; bind = -1; bchomp = ""
    m = strip_comment(substr(rest, 2))
    if (m ~ /-/) bchomp = "-"; else if (m ~ /\+/) bchomp = "+"
    if (match(m, /[1-9]/)) bind = entind + substr(m, RSTART, 1)
    if (bind >= 0 && bind <= bparent) bind = bparent + 1
    return
  }
  if (substr(rest, 1, 1) == "&" || substr(rest, 1, 1) == "*" || substr(rest, 1, 1) == "!") {
    # anchors, aliases and tags are not supported: skip the value entirely
    return
  }
  pend = 1; ppath = p; pval = rest; pind = entind
}

# One entry (a "- item" or a "key: value") at column col inside container d.
function entry(d, t, col,   p, rest, n, key, i, c, q) {
  if (t == "-" || substr(t, 1, 2) == "- ") {
    p = join(cpath[d], cidx[d]++)
    rest = substr(t, 2); n = match(rest, /[^ ]/); if (n == 0) { push(p, col, -1); return }
    col = col + n; rest = substr(rest, n)
    if (rest == "-" || substr(rest, 1, 2) == "- " || is_key(rest)) { push(p, col - 1, col); entry(depth, rest, col); return }
    start_value(p, rest, col - 1)
    return
  }
  if (!is_key(t)) return
  key = KEY; rest = REST
  start_value(join(cpath[d], key), rest, col)
}

# Is t a "key: ..." line? Sets KEY (unquoted, sanitised later) and REST.
function is_key(t,   q, i, n, c) {
  q = substr(t, 1, 1)
  if (q == "'" || q == "\"") {
    n = length(t)
    for (i = 2; i <= n; i++) { c = substr(t, i, 1); if (c == "\\" && q == "\"") { i++; continue } if (c == q) break }
    if (substr(t, i + 1, 1) != ":") return 0
    KEY = scalar(substr(t, 1, i)); REST = substr(t, i + 2)
    return REST == "" || substr(REST, 1, 1) == " "
  }
  if (q == "[" || q == "{" || q == "#" || q == "&" || q == "*" || q == "!" || q == "|" || q == ">") return 0
  if (!match(t, /:( |$)/)) return 0
  KEY = rtrim(substr(t, 1, RSTART - 1)); REST = substr(t, RSTART + 1)
  return KEY != ""
}

{
  line = $0; sub(/\r$/, "", line)
  n = match(line, /[^ ]/); ind = n ? n - 1 : -1; t = n ? substr(line, n) : ""

  if (blk) {
    if (ind < 0 || (bind < 0 && ind > bparent) || (bind >= 0 && ind >= bind)) {
      if (ind < 0) { bval = bval "\n"; next }
      if (bind < 0) bind = ind
      bval = bval substr(line, bind + 1) "\n"; next
    }
    finish_block()
  }
  if (ind < 0) { if (pend) pval = pval "\n"; next }
  if (pend && ind > pind) {
    # continuation of a multi-line flow scalar: lines fold into one space, blank lines stay newlines
    if (substr(pval, length(pval)) == "\n") pval = pval rtrim(t)
    else if (substr(pval, 1, 1) == "\"" && substr(pval, length(pval)) == "\\") pval = substr(pval, 1, length(pval) - 1) "\001" rtrim(t)
    else pval = pval " " rtrim(t)
    next
  }
  if (pend) { gsub(/\n+$/, "", pval); flush_pending() }
  if (substr(t, 1, 1) == "#") next
  if (t == "---" || substr(t, 1, 4) == "--- " || t == "...") next
  if (ind == 0 && substr(t, 1, 1) == "%") next

  dash = (t == "-" || substr(t, 1, 2) == "- ") ? "seq" : "map"
  while (1) {
    if (cind[depth] < 0) {
      if (ind > cmin[depth] || (ind == cmin[depth] && dash == "seq")) { cind[depth] = ind; ctype[depth] = dash; break }
    } else if (ind == cind[depth] && (ctype[depth] == "" || ctype[depth] == dash)) { ctype[depth] = dash; break }
    if (depth == 0) break
    depth--
  }
  if (depth == 0 && cind[0] < 0) { cind[0] = ind; ctype[0] = dash }
  if (ind != cind[depth] || ctype[depth] != dash) next
  entry(depth, t, ind)
}

END {
  if (blk) finish_block()
  if (pend) { gsub(/\n+$/, "", pval); flush_pending() }
}
