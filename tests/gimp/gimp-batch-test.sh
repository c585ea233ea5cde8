#!/bin/bash
# gimp-batch-test.sh — the plug-in inside a real GIMP 2.10, headless (gimp-console, no display).
#   gimp-batch-test.sh PLUGIN_DIR MOIRE_CLI PNG_CHECK SOURCE_DIR
# A fresh GIMP2_DIRECTORY and HOME, and a gimprc whose plug-in-path has the build's plugin/
# folder: nothing is installed. gimp-console always exits 0, so success is read from its
# stderr ("batch command executed successfully", no "execution error") and the files it saved.
# Checks: layer count, names, stacking, offsets and size (selection), parasites (also after an
# XCF round trip), pixels (vary; equal to the CLI's PNG for the same seed and settings),
# img2img and inpainting (layer mask), the error message for a bad model, an untouched image
# after a failure.
set -uo pipefail
PLUGIN_DIR=$1 MOIRE=$2 PNG_CHECK=$3 SRC=$4
MODEL=$SRC/tests/golden/tiny_qkv.safetensors
command -v gimp-console-2.10 >/dev/null || { echo "SKIP: gimp-console-2.10 not installed"; exit 77; }

T=$(mktemp -d)
[ -n "${MOIRE_GIMP_KEEP:-}" ] && echo "keeping $T" || trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok()   { echo "ok   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
has()  { grep -qF -- "$2" "$1"; }

printf '(plug-in-path "${gimp_dir}/plug-ins:${gimp_plug_in_dir}/plug-ins:%s")\n' "$PLUGIN_DIR" > "$T/gimprc"
export GIMP2_DIRECTORY=$T/gimp HOME=$T/home GTK_A11Y=none NO_AT_BRIDGE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset DISPLAY WAYLAND_DISPLAY MOIRE_MODEL

gimp_batch() { # LOG SCHEME
    timeout 300 gimp-console-2.10 -i -d -f --gimprc="$T/gimprc" -b "$2" -b '(gimp-quit 0)' > "$1" 2>&1
}

# --- 1. txt2img, a batch of 2, size equal to the model's (64): pixels must equal the CLI's ---
cat > "$T/main.scm" <<SCM
(define (msg . parts) (gimp-message (apply string-append parts)))
(define (num n) (number->string n))
(define (param layer name) (caddr (car (gimp-item-get-parasite layer name))))
(let* ((img (car (gimp-image-new 64 64 RGB)))
       (bg (car (gimp-layer-new img 64 64 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-drawable-fill bg FILL-WHITE)
  (let* ((ret (plug-in-moire-generate RUN-NONINTERACTIVE img bg "goldfish" "" "$MODEL" "" 8 0 7 0 0 2 0 0.75 0))
         (l0 (car ret))
         (l1 (vector-ref (caddr ret) 1))
         (stack (cadr (gimp-image-get-layers img))))
    (msg "T: count=" (num (cadr ret)) " layers=" (num (car (gimp-image-get-layers img))))
    (msg "T: name0=" (car (gimp-item-get-name l0)) ";")
    (msg "T: name1=" (car (gimp-item-get-name l1)) ";")
    (msg "T: top=" (car (gimp-item-get-name (vector-ref stack 0))) ";")
    (msg "T: size0=" (num (car (gimp-drawable-width l0))) "x" (num (car (gimp-drawable-height l0))))
    (msg "T: param0=" (param l0 "moire-parameters"))
    (msg "T: json0=" (param l0 "moire-settings"))
    (file-png-save-defaults RUN-NONINTERACTIVE img l0 "$T/layer0.png" "layer0.png")
    (file-png-save-defaults RUN-NONINTERACTIVE img l1 "$T/layer1.png" "layer1.png")
    (gimp-xcf-save 0 img l0 "$T/out.xcf" "out.xcf")
    (gimp-image-delete img))
  (let* ((img (car (gimp-xcf-load 0 "$T/out.xcf" "out.xcf")))
         (top (vector-ref (cadr (gimp-image-get-layers img)) 0)))
    (msg "T: xcf layers=" (num (car (gimp-image-get-layers img))) " top=" (car (gimp-item-get-name top)) ";")
    (msg "T: xcf param=" (param top "moire-parameters"))
    (gimp-image-delete img)))
; --- 2. a selection: the result covers its bounds; img2img; inpainting with a feathered selection ---
(let* ((img (car (gimp-image-new 200 120 RGB)))
       (bg (car (gimp-layer-new img 200 120 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-context-set-foreground '(200 40 40))
  (gimp-drawable-fill bg FILL-FOREGROUND)
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 30 20 80 60)
  (let* ((l (car (plug-in-moire-generate RUN-NONINTERACTIVE img bg "golden retriever" "" "$MODEL" "euler" 6 0 3 0 0 1 0 0.75 0)))
         (off (gimp-drawable-offsets l)))
    (msg "T: sel offsets=" (num (car off)) "," (num (cadr off)) " size=" (num (car (gimp-drawable-width l))) "x" (num (car (gimp-drawable-height l))))
    (file-png-save-defaults RUN-NONINTERACTIVE img l "$T/sel.png" "sel.png"))
  (let* ((l (car (plug-in-moire-generate RUN-NONINTERACTIVE img bg "goldfish" "" "$MODEL" "ddim" 6 0 5 0 0 1 1 0.5 0))))
    (msg "T: img2img name=" (car (gimp-item-get-name l)) ";"))
  (gimp-selection-feather img 8)
  (let* ((l (car (plug-in-moire-generate RUN-NONINTERACTIVE img bg "goldfish" "" "$MODEL" "" 6 0 9 0 0 1 2 0.8 0)))
         (off (gimp-drawable-offsets l)))
    (msg "T: inpaint mask=" (if (= (car (gimp-layer-get-mask l)) -1) "none" "yes")
         " offsets=" (num (car off)) "," (num (cadr off)) " size=" (num (car (gimp-drawable-width l))) "x" (num (car (gimp-drawable-height l))))
    (msg "T: inpaint param=" (param l "moire-parameters")))
  (msg "T: sel layers=" (num (car (gimp-image-get-layers img))))
  (gimp-image-delete img))
SCM
start=$(date +%s.%N)
gimp_batch "$T/main.log" "$(cat "$T/main.scm")"
echo "gimp-console (batch 1, fresh profile): $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?') s"
sed -n 's/^script-fu-Warning: //p' "$T/main.log" | grep -v '^$' | sed 's/^/    /' | head -40
check "batch ran without errors" has "$T/main.log" "batch command executed successfully"
check "no execution error" bash -c "! grep -q 'execution error' '$T/main.log'"
check "two layers returned, three in the image" has "$T/main.log" "T: count=2 layers=3"
check "layer name 'Moiré: goldfish #7'" has "$T/main.log" "T: name0=Moiré: goldfish #7;"
check "image 1 of the batch uses seed + 1" has "$T/main.log" "T: name1=Moiré: goldfish #8;"
check "image 0 is on top" has "$T/main.log" "T: top=Moiré: goldfish #7;"
check "layer fits the image (64x64)" has "$T/main.log" "T: size0=64x64"
check "parasite moire-parameters has the A1111 line" has "$T/main.log" "Steps: 8, Sampler:"
check "parasite moire-parameters has the seed" grep -q "Seed: 7, Size: 64x64" "$T/main.log"
check "parasite moire-settings has JSON" grep -q 'T: json0={' "$T/main.log"
check "XCF keeps the layer" has "$T/main.log" "T: xcf layers=3 top=Moiré: goldfish #7;"
check "XCF keeps the parasite" grep -q 'T: xcf param=goldfish' "$T/main.log"

"$MOIRE" generate --model "$MODEL" --prompt goldfish --seed 7 --steps 8 --batch 2 --output "$T/cli.png" > "$T/cli.log" 2>&1 \
    || { cat "$T/cli.log"; bad "CLI generate"; }
cli0=$T/cli-0.png cli1=$T/cli-1.png   # --batch N writes FILE-0.png, FILE-1.png
check "layer pixels vary" "$PNG_CHECK" varied "$T/layer0.png"
check "layer 0 equals the CLI's image (seed 7)" "$PNG_CHECK" same "$T/layer0.png" "$cli0" 0
check "layer 1 equals the CLI's image 1 (seed 8)" "$PNG_CHECK" same "$T/layer1.png" "$cli1" 0
cli_line=$("$PNG_CHECK" params "$cli0" | tail -1)
check "parasite text equals the CLI PNG's parameters line" has "$T/main.log" "$cli_line"

check "selection: layer at the selection bounds" has "$T/main.log" "T: sel offsets=30,20 size=80x60"
check "selection: scaled result varies" "$PNG_CHECK" varied "$T/sel.png"
check "img2img: layer added" has "$T/main.log" "T: img2img name=Moiré: goldfish #5;"
check "inpaint: layer masked by the selection" grep -q "T: inpaint mask=yes" "$T/main.log"
check "inpaint: parameters carry the strength" grep -q "Denoising strength: 0.8" "$T/main.log"
check "selection image: bg + 3 layers" has "$T/main.log" "T: sel layers=4"

# --- 2. failures: a clear message, and the image untouched ---------------------------------
cat > "$T/fail.scm" <<SCM
(define img (car (gimp-image-new 64 64 RGB)))
(define bg (car (gimp-layer-new img 64 64 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL)))
(gimp-image-insert-layer img bg 0 0)
(catch (gimp-message "T: bad model refused")
  (plug-in-moire-generate RUN-NONINTERACTIVE img bg "goldfish" "" "$T/missing.safetensors" "" 4 0 1 0 0 1 0 0.75 0))
(catch (gimp-message "T: inpaint without selection refused")
  (plug-in-moire-generate RUN-NONINTERACTIVE img bg "goldfish" "" "$MODEL" "" 4 0 1 0 0 1 2 0.75 0))
(catch (gimp-message "T: unknown prompt refused")
  (plug-in-moire-generate RUN-NONINTERACTIVE img bg "no such class zzz" "" "$MODEL" "" 4 0 1 0 0 1 0 0.75 0))
(gimp-message (string-append "T: layers after failures=" (number->string (car (gimp-image-get-layers img)))))
(gimp-image-delete img)
SCM
gimp_batch "$T/fail.log" "(begin $(cat "$T/fail.scm"))"
sed -n 's/^script-fu-Warning: //p' "$T/fail.log" | grep -v '^$' | sed 's/^/    /' | head -20
check "failures: batch completed" has "$T/fail.log" "batch command executed successfully"
check "missing model refused" has "$T/fail.log" "T: bad model refused"
check "inpaint without a selection refused" has "$T/fail.log" "T: inpaint without selection refused"
check "unknown class refused" has "$T/fail.log" "T: unknown prompt refused"
check "message names the missing model file" has "$T/fail.log" "missing.safetensors\" does not exist"
check "message says to select first" has "$T/fail.log" "nothing is selected"
check "message suggests class names" has "$T/fail.log" "did you mean: tench (0), goldfish (1)"
check "image untouched after failures" has "$T/fail.log" "T: layers after failures=1"


# --- 3. the embedded default model: no model path given (MOIRE_MODEL is unset above) --------
if [ -f "$SRC/data/models/moire-emoji.safetensors" ]; then
    cat > "$T/default.scm" <<SCM
(let* ((img (car (gimp-image-new 64 64 RGB)))
       (bg (car (gimp-layer-new img 64 64 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-drawable-fill bg FILL-WHITE)
  (let ((l (car (plug-in-moire-generate RUN-NONINTERACTIVE img bg "red apple" "" "" "" 0 0 11 0 0 1 0 0.75 0))))
    (gimp-message (string-append "T: default name=" (car (gimp-item-get-name l)) ";"))
    (gimp-message (string-append "T: default param=" (caddr (car (gimp-item-get-parasite l "moire-parameters")))))
    (gimp-message (string-append "T: default alpha=" (if (= (car (gimp-drawable-has-alpha l)) 1) "yes" "no"))))
  (gimp-image-delete img))
SCM
    gimp_batch "$T/default.log" "$(cat "$T/default.scm")"
    check "embedded model: batch completed" has "$T/default.log" "batch command executed successfully"
    check "embedded model: layer 'Moiré: red apple #11'" has "$T/default.log" "T: default name=Moiré: red apple #11;"
    check "embedded model: parameters name the model" grep -q "Model: moire-emoji" "$T/default.log"
    check "embedded model: the RGBA result keeps its alpha" has "$T/default.log" "T: default alpha=yes"
fi

echo "gimp batch: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
