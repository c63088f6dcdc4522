# mime.awk: split a MIME multipart user-data into parts, as cloud-init reads them.
#
# Usage: awk -v out=DIR -f mime.awk user-data
# Writes DIR/NNN.type (lower-case media type), DIR/NNN.encoding (Content-Transfer-Encoding, may
# be empty), DIR/NNN.name (filename parameter, may be empty) and DIR/NNN.body (raw part body).
# Nested multiparts are written as their own part (type multipart/...) and not descended into.

function lower(s) { return tolower(s) }
function param(h, name,   v) {
  if (!match(lower(h), name "=")) return ""
  v = substr(h, RSTART + RLENGTH)
  if (substr(v, 1, 1) == "\"") { v = substr(v, 2); sub(/".*/, "", v) } else sub(/[; \t].*/, "", v)
  return v
}
function header(h,   n, v) {
  n = lower(h); sub(/:.*/, "", n); v = h; sub(/^[^:]*:[ \t]*/, "", v)
  if (n == "content-type") { ctype = v }
  else if (n == "content-transfer-encoding") { cenc = lower(v); gsub(/[ \t]/, "", cenc) }
  else if (n == "content-disposition") { cname = param(v, "filename") }
}
function start_part() { part++; inhdr = 1; ctype = ""; cenc = ""; cname = ""; lastline = ""; havelast = 0; hdr = "" }
function close_part(   f, t) {
  if (part < 1) return
  f = sprintf("%s/%03d", out, part)
  if (havelast) printf "%s", lastline > (f ".body")
  else printf "" > (f ".body")
  close(f ".body")
  t = lower(ctype); sub(/;.*/, "", t); gsub(/[ \t]/, "", t)
  printf "%s", (t == "" ? "text/plain" : t) > (f ".type"); close(f ".type")
  printf "%s", cenc > (f ".encoding"); close(f ".encoding")
  printf "%s", cname > (f ".name"); close(f ".name")
}
BEGIN { state = 0; part = 0; top = "" }
{
  sub(/\r$/, "")
  if (state == 0) {                       # top-level headers (with folded continuation lines)
    if ($0 ~ /^[ \t]/) { top = top " " $0; next }
    if ($0 == "") { boundary = param(top, "boundary"); state = 1; next }
    top = top "\n" $0; next
  }
  if (boundary == "") exit 1
  if ($0 == "--" boundary "--") { close_part(); state = 3; next }
  if ($0 == "--" boundary) { close_part(); start_part(); state = 2; next }
  if (state != 2) next                    # preamble / epilogue
  if (inhdr) {
    if ($0 ~ /^[ \t]/) { hdr = hdr " " $0; next }
    if (hdr != "") header(hdr)
    hdr = $0
    if ($0 == "") { inhdr = 0; hdr = "" }
    next
  }
  if (havelast) printf "%s\n", lastline > (sprintf("%s/%03d", out, part) ".body")
  lastline = $0; havelast = 1
}
END { if (state == 2) close_part() }
