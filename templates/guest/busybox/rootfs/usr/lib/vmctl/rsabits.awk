# rsabits.awk: bit length of an RSA public key blob given as "od -An -tx1 -v" output.
{ for (i = 1; i <= NF; i++) b[n++] = $i }
function hex(h,   d, i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
function u32(p) { return ((hex(b[p]) * 256 + hex(b[p + 1])) * 256 + hex(b[p + 2])) * 256 + hex(b[p + 3]) }
END {
  p = 0; p += 4 + u32(p)             # key type string
  p += 4 + u32(p)                    # public exponent
  len = u32(p); p += 4
  while (len > 0 && b[p] == "00") { p++; len-- }
  if (len == 0) { print 0; exit }
  top = hex(b[p]); bits = 0; while (top > 0) { bits++; top = int(top / 2) }
  print (len - 1) * 8 + bits
}
