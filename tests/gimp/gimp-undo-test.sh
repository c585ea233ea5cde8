#!/bin/bash
# gimp-undo-test.sh — one Ctrl+Z in GUI GIMP 2.10 removes everything one plug-in run added.
#   gimp-undo-test.sh PLUGIN_DIR SOURCE_DIR
# GIMP 2.10's PDB has no call that undoes, so this drives a real GUI GIMP under Xvfb: a -b
# batch command starts the Script-Fu server (plug-in-script-fu-server) on 127.0.0.1 and a free
# port; the test sends Script-Fu over TCP (request: 'G', 2-byte big-endian length, the
# command; reply: 'G', error byte, 2-byte length, the text) to build and display an image
# (layers "bg" and "marker", each its own undo step), run plug-in-moire-generate
# non-interactively (count 2), and read the layer stack. xdotool presses Ctrl+Z in the image
# window: exactly the two generated layers must be gone and "marker" must still be there (one
# undo step, not two), and it must stay so. Ctrl+Y (redo) must bring both back (in GIMP 2.10
# xdotool's ctrl+shift+z acts as a second Ctrl+Z).
# The Script-Fu server plug-in never notices GIMP dying, so the inner script ends it by id.
# Skips (77) without GUI GIMP, xvfb-run or xdotool.
set -uo pipefail
PLUGIN_DIR=$1 SRC=$2
MODEL=$SRC/tests/golden/tiny_qkv.safetensors
for p in gimp-2.10 xvfb-run xdotool; do
    command -v $p >/dev/null || { echo "SKIP: $p not installed"; exit 77; }
done

T=$(mktemp -d)
[ -n "${MOIRE_GIMP_KEEP:-}" ] && echo "keeping $T" || trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok()   { echo "ok   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

mkdir -p "$T/gimp" "$T/home"
printf '(plug-in-path "${gimp_dir}/plug-ins:${gimp_plug_in_dir}/plug-ins:%s")\n(show-tips no)\n' \
    "$PLUGIN_DIR" > "$T/gimprc"
export GIMP2_DIRECTORY=$T/gimp HOME=$T/home GTK_A11Y=none NO_AT_BRIDGE=1 GSETTINGS_BACKEND=memory
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset MOIRE_MODEL WAYLAND_DISPLAY

# The part that runs inside the X server: GIMP with the Script-Fu server, then the checks.
cat > "$T/inner.sh" <<'SH'
#!/bin/bash
set -uo pipefail
T=$1 MODEL=$2
# GIMP's Script-Fu server never notices GIMP dying: ask GIMP to quit (it ends its plug-ins),
# and end what is left of it and its plug-ins (by their ids) if that did not work.
cleanup() {
    [ -n "${gpid:-}" ] || return 0
    local kids i
    kids=$(pgrep -P "$gpid" 2>/dev/null)
    { send '(gimp-quit 1)'; } 2>/dev/null
    for i in $(seq 1 40); do kill -0 "$gpid" 2>/dev/null || break; sleep 0.25; done
    kill "$gpid" 2>/dev/null; wait "$gpid" 2>/dev/null
    for i in $kids; do kill "$i" 2>/dev/null; done
    return 0
}
trap cleanup EXIT

port_free() { ! ( exec 9<>"/dev/tcp/127.0.0.1/$1" ) 2>/dev/null; }
port=
for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    port_free "$p" && { port=$p; break; }
done
[ -n "$port" ] || { echo "no free port"; exit 1; }

gimp-2.10 -n -s -d -f --gimprc="$T/gimprc" \
    -b "(plug-in-script-fu-server 1 \"127.0.0.1\" $port \"$T/server.log\")" > "$T/gimp.log" 2>&1 &
gpid=$!

# Connect (GIMP takes a while to start, more so on a busy machine).
for i in $(seq 1 240); do
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null && break
    kill -0 "$gpid" 2>/dev/null || { echo "GIMP exited"; cat "$T/gimp.log"; exit 1; }
    sleep 0.5
done
{ true >&3; } 2>/dev/null || { echo "Script-Fu server never answered on port $port"; cat "$T/gimp.log"; exit 1; }
echo "connected on port $port after $((i / 2)) s"

# send COMMAND: one request to the server. sf COMMAND: send it, print the reply text; fails
# when the server reports an error.
send() {
    local n
    n=$(LC_ALL=C; echo ${#1})
    printf "G\\x$(printf %02x $((n >> 8)))\\x$(printf %02x $((n & 255)))%s" "$1" >&3
}
sf() {
    local hdr len
    send "$1"
    hdr=($(timeout 120 dd bs=1 count=4 <&3 2>/dev/null | od -An -tu1))
    [ "${#hdr[@]}" -eq 4 ] || { echo "<no reply>"; return 1; }
    len=$(( hdr[2] * 256 + hdr[3] ))
    [ "$len" -gt 0 ] && timeout 60 dd bs=1 count=$len <&3 2>/dev/null
    [ "${hdr[1]}" -eq 0 ]
}

# stack: the layer names, top first, each followed by '|'.
sf '(define (stack) (let loop ((l (reverse (vector->list (cadr (gimp-image-get-layers img))))) (acc ""))
      (if (null? l) acc (loop (cdr l) (string-append (car (gimp-item-get-name (car l))) "|" acc)))))' >/dev/null
sf '(define img (car (gimp-image-new 96 64 RGB)))' >/dev/null
sf '(define bg (car (gimp-layer-new img 96 64 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL)))' >/dev/null
sf '(define mk (car (gimp-layer-new img 96 64 RGBA-IMAGE "marker" 100 LAYER-MODE-NORMAL)))' >/dev/null
sf '(begin (gimp-image-insert-layer img bg 0 0) (gimp-drawable-fill bg FILL-WHITE)
           (gimp-image-insert-layer img mk 0 -1)
           (gimp-image-set-filename img "'"$T"'/moire-undo-test.xcf")
           (gimp-display-new img) (gimp-displays-flush) (stack))' | tee "$T/before.txt"; echo
r=$(sf "(begin (plug-in-moire-generate RUN-NONINTERACTIVE img bg \"goldfish\" \"\" \"$MODEL\" \"\" 4 0 7 0 0 2 0 0.75 0)
           (gimp-displays-flush) (stack))")
echo "after generate: $r"
echo "$r" > "$T/generated.txt"

# The image window: its title holds the file name.
wid=
for i in $(seq 1 60); do
    wid=$(xdotool search --onlyvisible --name 'moire-undo-test' 2>/dev/null | head -1)
    [ -n "$wid" ] && break; sleep 0.5
done
[ -n "$wid" ] || { echo "no image window"; xdotool search --onlyvisible --name . getwindowname %@ 2>&1 | head; exit 1; }
echo "image window $wid: $(xdotool getwindowname "$wid")"

# press BEFORE KEYS: focus the image window, press; wait up to 15 s for the stack to change
# (a key that never arrived is pressed once more: a late first one would show as a second
# step and fail the check, never pass it), then 2 s more for a late second step.
press() {
    local before=$1 s try i
    for try in 1 2; do
        timeout 10 xdotool windowfocus --sync "$wid" 2>/dev/null || xdotool windowfocus "$wid"
        sleep 0.3
        xdotool key --clearmodifiers "$2"
        for i in $(seq 1 60); do
            s=$(sf '(stack)'); [ "$s" != "$before" ] && break 2; sleep 0.25
        done
        echo "no change after $2 (try $try)" >&2
    done
    sleep 2
    sf '(begin (gimp-displays-flush) (stack))'
}
u=$(press "$r" ctrl+z); echo "after Ctrl+Z: $u"; echo "$u" > "$T/undone.txt"
x=$(press "$u" ctrl+y); echo "after Ctrl+Y: $x"; echo "$x" > "$T/redone.txt"
sf '(gimp-image-clean-all img)' >/dev/null
SH
chmod +x "$T/inner.sh"

start=$(date +%s)
nice -n 10 timeout 150 xvfb-run -a -s '-screen 0 1280x900x24' "$T/inner.sh" "$T" "$MODEL" > "$T/inner.log" 2>&1
rc=$?
sed 's/^/    /' "$T/inner.log" | head -40
echo "GUI GIMP run: $(( $(date +%s) - start )) s, rc $rc"
[ $rc -eq 0 ] || { echo "--- gimp.log"; tail -20 "$T/gimp.log"; }

same() { [ -s "$1" ] && [ "$(cat "$1")" = "\"$2\"" ]; }
gen='Moiré: goldfish #7|Moiré: goldfish #8|marker|bg|'
check "GUI GIMP and its Script-Fu server ran" test $rc -eq 0
check "before: marker over bg" same "$T/before.txt" 'marker|bg|'
check "generate added two layers on top" same "$T/generated.txt" "$gen"
check "one Ctrl+Z removes both generated layers, nothing more" same "$T/undone.txt" 'marker|bg|'
check "Ctrl+Y (redo) brings both back" same "$T/redone.txt" "$gen"

echo "gimp undo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
