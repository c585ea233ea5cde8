#!/bin/bash
# gimp-interactive-test.sh — the plug-in's GTK 4 dialog inside GIMP 2.10, under Xvfb.
#   gimp-interactive-test.sh PLUGIN_DIR PNG_CHECK SOURCE_DIR
# gimp-console runs the plug-in with RUN-INTERACTIVE; the dialog's self-test hook
# (MOIRE_GIMP_SELF_TEST) presses Generate once the model is loaded, saves the dialog as PNG
# once the result is on the canvas, and presses Apply (or, =cancel, closes the dialog at the
# first live-preview frame). Then Repeat-last (RUN-WITH-LAST-VALS) re-runs with the dialog's
# values. Checks: the layer, its name and pixels, the screenshot, the preview layer gone after
# a cancel, nothing inserted.
set -uo pipefail
PLUGIN_DIR=$1 PNG_CHECK=$2 SRC=$3
MODEL=$SRC/tests/golden/tiny_qkv.safetensors
command -v gimp-console-2.10 >/dev/null || { echo "SKIP: gimp-console-2.10 not installed"; exit 77; }
command -v xvfb-run >/dev/null || { echo "SKIP: xvfb-run not installed"; exit 77; }

T=$(mktemp -d)
[ -n "${MOIRE_GIMP_KEEP:-}" ] && echo "keeping $T" || trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok()   { echo "ok   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
has()  { grep -qF -- "$2" "$1"; }

printf '(plug-in-path "${gimp_dir}/plug-ins:${gimp_plug_in_dir}/plug-ins:%s")\n' "$PLUGIN_DIR" > "$T/gimprc"
export GIMP2_DIRECTORY=$T/gimp HOME=$T/home GTK_A11Y=none NO_AT_BRIDGE=1 GSETTINGS_BACKEND=memory
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset MOIRE_MODEL WAYLAND_DISPLAY

gimp_xvfb() { # LOG SCHEME
    timeout 300 xvfb-run -a -s '-screen 0 1280x900x24' \
        gimp-console-2.10 -i -d -f --gimprc="$T/gimprc" -b "$2" -b '(gimp-quit 0)' > "$1" 2>&1
}

cat > "$T/apply.scm" <<SCM
(define (msg . parts) (gimp-message (apply string-append parts)))
(define (num n) (number->string n))
(let* ((img (car (gimp-image-new 128 96 RGB)))
       (bg (car (gimp-layer-new img 128 96 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-drawable-fill bg FILL-WHITE)
  (let* ((l (car (plug-in-moire-generate RUN-INTERACTIVE img bg "goldfish" "" "$MODEL" "" 8 0 7 0 0 1 0 0.75 0))))
    (msg "T: interactive name=" (car (gimp-item-get-name l)) "; layers=" (num (car (gimp-image-get-layers img))))
    (msg "T: interactive size=" (num (car (gimp-drawable-width l))) "x" (num (car (gimp-drawable-height l))))
    (msg "T: interactive param=" (caddr (car (gimp-item-get-parasite l "moire-parameters"))))
    (file-png-save-defaults RUN-NONINTERACTIVE img l "$T/interactive.png" "interactive.png"))
  (let* ((l (car (plug-in-moire-generate RUN-WITH-LAST-VALS img bg "" "" "" "" 0 0 0 0 0 0 0 0 0))))
    (msg "T: repeat name=" (car (gimp-item-get-name l)) "; layers=" (num (car (gimp-image-get-layers img))))
    (file-png-save-defaults RUN-NONINTERACTIVE img l "$T/repeat.png" "repeat.png"))
  (gimp-image-delete img))
SCM
MOIRE_GIMP_SELF_TEST=apply MOIRE_GIMP_SCREENSHOT=$T/dialog.png gimp_xvfb "$T/apply.log" "$(cat "$T/apply.scm")"
sed -n 's/^script-fu-Warning: //p' "$T/apply.log" | grep -v '^$' | sed 's/^/    /'
check "interactive batch ran without errors" has "$T/apply.log" "batch command executed successfully"
check "no execution error" bash -c "! grep -q 'execution error' '$T/apply.log'"
check "dialog applied one layer" has "$T/apply.log" "T: interactive name=Moiré: goldfish #7; layers=2"
check "layer fits the image" has "$T/apply.log" "T: interactive size=128x96"
check "layer has its parameters" grep -q "T: interactive param=goldfish" "$T/apply.log"
check "layer pixels vary" "$PNG_CHECK" varied "$T/interactive.png"
check "repeat-last reuses the dialog's values" has "$T/apply.log" "T: repeat name=Moiré: goldfish #7 (2); layers=3"
check "repeat-last gives the same image" "$PNG_CHECK" same "$T/interactive.png" "$T/repeat.png" 0
check "dialog screenshot saved" test -s "$T/dialog.png"
[ -n "${MOIRE_SCREENSHOT_DIR:-}" ] && [ -s "$T/dialog.png" ] && cp "$T/dialog.png" "$MOIRE_SCREENSHOT_DIR/gimp-dialog.png"

# Pixel art, Apply that keeps the dialog open, placement, and the history kept with the image.
# The image has "cover", an opaque layer above "bg"; the plug-in runs on bg. The preview and
# the results must go on top (else cover hides them). Apply (dialog stays) then a second
# generation and Apply and Close: two layers. The preview's pixels just before the second
# Apply must be byte for byte the layer it inserted (same nearest-neighbour scaling).
cat > "$T/pixel.scm" <<SCM
(define (msg . parts) (gimp-message (apply string-append parts)))
(define (num n) (number->string n))
(let* ((img (car (gimp-image-new 200 150 RGB)))
       (bg (car (gimp-layer-new img 200 150 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL)))
       (cover (car (gimp-layer-new img 200 150 RGB-IMAGE "cover" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-drawable-fill bg FILL-WHITE)
  (gimp-image-insert-layer img cover 0 0)
  (gimp-drawable-fill cover FILL-FOREGROUND)
  (gimp-image-set-active-layer img bg)
  (let* ((ret (plug-in-moire-generate RUN-INTERACTIVE img bg "goldfish" "" "$MODEL" "" 6 0 5 0 0 1 0 0.75 1))
         (stack (cadr (gimp-image-get-layers img)))
         (top (vector-ref stack 0)))
    (msg "T: pixel layers=" (num (car (gimp-image-get-layers img))) " returned=" (num (cadr ret)))
    (msg "T: pixel top=" (car (gimp-item-get-name top)) "; second=" (car (gimp-item-get-name (vector-ref stack 1)))
         "; third=" (car (gimp-item-get-name (vector-ref stack 2))) ";")
    (file-png-save-defaults RUN-NONINTERACTIVE img top "$T/pixel-applied.png" "pixel-applied.png")
    (msg "T: history parasite=" (if (member "moire-history" (cadr (gimp-image-get-parasite-list img))) "yes" "no")))
  (plug-in-moire-generate RUN-INTERACTIVE img bg "goldfish" "" "$MODEL" "" 6 0 5 0 0 1 0 0.75 1)
  (gimp-image-delete img))
SCM
MOIRE_GIMP_SELF_TEST=apply-keep MOIRE_GIMP_PREVIEW_DUMP=$T/pixel-preview.png gimp_xvfb "$T/pixel.log" "$(cat "$T/pixel.scm")"
sed -n 's/^script-fu-Warning: //p' "$T/pixel.log" | grep -v '^$' | sed 's/^/    /'
grep "moire self-test" "$T/pixel.log" | sed 's/^/    /'
check "pixel art: batch ran" has "$T/pixel.log" "batch command executed successfully"
check "apply keeps the dialog open" has "$T/pixel.log" "moire self-test: applied, dialog still open"
check "two applies, two layers" has "$T/pixel.log" "T: pixel layers=4 returned=2"
check "results on top, above the layer that covered bg" has "$T/pixel.log" "T: pixel top=Moiré: goldfish #5 (2); second=Moiré: goldfish #5; third=cover;"
check "preview layer on top of the stack" has "$T/pixel.log" "moire self-test: preview stack position 0, layer mask no"
check "pixel art: the preview is byte for byte the applied layer" "$PNG_CHECK" same "$T/pixel-preview.png" "$T/pixel-applied.png" 0
check "pixel art: the layer is not flat" "$PNG_CHECK" varied "$T/pixel-applied.png"
check "the dialog's history is kept with the image" has "$T/pixel.log" "T: history parasite=yes"
check "reopened, the dialog has the image's history back" has "$T/pixel.log" "moire self-test: 2 results restored from the image"

# Inpainting: the preview shows only the selection (a layer mask), as the result will.
cat > "$T/inpaint.scm" <<SCM
(let* ((img (car (gimp-image-new 96 96 RGB)))
       (bg (car (gimp-layer-new img 96 96 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-drawable-fill bg FILL-WHITE)
  (gimp-image-select-ellipse img CHANNEL-OP-REPLACE 24 24 48 48)
  (let* ((l (car (plug-in-moire-generate RUN-INTERACTIVE img bg "goldfish" "" "$MODEL" "" 4 0 7 0 0 1 2 0.9 0))))
    (gimp-message (string-append "T: inpaint layer mask=" (if (>= (car (gimp-layer-get-mask l)) 0) "yes" "no"))))
  (gimp-image-delete img))
SCM
MOIRE_GIMP_SELF_TEST=apply MOIRE_GIMP_PREVIEW_DUMP=$T/inpaint-preview.png gimp_xvfb "$T/inpaint.log" "$(cat "$T/inpaint.scm")"
sed -n 's/^script-fu-Warning: //p' "$T/inpaint.log" | grep -v '^$' | sed 's/^/    /'
grep "moire self-test" "$T/inpaint.log" | sed 's/^/    /'
check "inpaint: batch ran" has "$T/inpaint.log" "batch command executed successfully"
check "inpaint: the preview is masked by the selection" has "$T/inpaint.log" "moire self-test: preview stack position 0, layer mask yes"
check "inpaint: the result too" has "$T/inpaint.log" "T: inpaint layer mask=yes"

cat > "$T/cancel.scm" <<SCM
(let* ((img (car (gimp-image-new 64 64 RGB)))
       (bg (car (gimp-layer-new img 64 64 RGB-IMAGE "bg" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (catch (gimp-message "T: cancelled")
    (plug-in-moire-generate RUN-INTERACTIVE img bg "goldfish" "" "$MODEL" "" 200 0 7 0 0 1 0 0.75 0))
  (gimp-message (string-append "T: layers after cancel=" (number->string (car (gimp-image-get-layers img)))))
  (gimp-image-delete img))
SCM
MOIRE_GIMP_SELF_TEST=cancel gimp_xvfb "$T/cancel.log" "$(cat "$T/cancel.scm")"
sed -n 's/^script-fu-Warning: //p' "$T/cancel.log" | grep -v '^$' | sed 's/^/    /'
check "cancel: batch completed" has "$T/cancel.log" "batch command executed successfully"
check "cancel: nothing inserted, preview removed" has "$T/cancel.log" "T: layers after cancel=1"

echo "gimp interactive: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
