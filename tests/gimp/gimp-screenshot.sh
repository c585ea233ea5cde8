#!/bin/bash
# gimp-screenshot.sh — docs/screenshots/gimp-dialog-canvas.png: GUI GIMP 2.10 under Xvfb with
# the Moiré dialog open and the generated image on the canvas (in the selection).
#   tests/gimp/gimp-screenshot.sh BUILD_DIR [OUT.png]
# Needs xvfb-run and ImageMagick's `import`. Not part of the test suites (GUI GIMP is slow to
# start and its look depends on the installed themes); run it by hand to refresh the picture.
# The dialog uses the embedded model (no model path given), as an artist's first run does;
# the wait is generous because a busy machine (a training run) slows GIMP's start a lot.
set -euo pipefail
BUILD=$(realpath "$1")
OUT=$(realpath -m "${2:-docs/screenshots/gimp-dialog-canvas.png}")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/gimp"
printf '(plug-in-path "${gimp_dir}/plug-ins:${gimp_plug_in_dir}/plug-ins:%s")\n(show-tips no)\n' \
    "$BUILD/plugin" > "$T/gimprc"
# The dialog (GTK 4 cannot place its window) sits at 0,0: put GIMP's window to its right.
sed -e 's/(position 200 100)/(position 820 0)/' -e 's/(size 1024 768)/(size 1100 1000)/' \
    /etc/gimp/2.0/sessionrc > "$T/gimp/sessionrc"
cat > "$T/run.sh" <<SH
#!/bin/bash
export GIMP2_DIRECTORY=$T/gimp HOME=$T/home GTK_A11Y=none NO_AT_BRIDGE=1 GSETTINGS_BACKEND=memory
export MOIRE_GIMP_SELF_TEST=apply MOIRE_GIMP_READY_FILE=$T/ready MOIRE_GIMP_CONTINUE_FILE=$T/continue
gimp-2.10 -n -s --gimprc=$T/gimprc -b '
(let* ((img (car (gimp-image-new 640 480 RGB)))
       (bg (car (gimp-layer-new img 640 480 RGB-IMAGE "Background" 100 LAYER-MODE-NORMAL))))
  (gimp-image-insert-layer img bg 0 0)
  (gimp-context-set-foreground (quote (40 60 110)))
  (gimp-context-set-background (quote (230 200 150)))
  (gimp-drawable-edit-gradient-fill bg GRADIENT-LINEAR 0 FALSE 1 0 TRUE 0 0 640 480)
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 200 120 256 256)
  (gimp-display-new img)
  (gimp-displays-flush)
  (plug-in-moire-generate RUN-INTERACTIVE img bg "red apple" "" "" "" 24 0 7 0 0 1 0 0.75 1)
  (gimp-image-clean-all img))' > $T/gimp.log 2>&1 &
pid=\$!
for i in \$(seq 1 600); do [ -e $T/ready ] && break; sleep 0.5; done
sleep 2
import -window root "$OUT"
touch $T/continue
sleep 2
kill \$pid 2>/dev/null || true
wait \$pid 2>/dev/null || true
SH
chmod +x "$T/run.sh"
xvfb-run -a -s '-screen 0 1920x1000x24' "$T/run.sh"
[ -s "$OUT" ] && echo "wrote $OUT" || { cat "$T/gimp.log"; exit 1; }
