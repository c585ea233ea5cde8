#!/bin/bash
# studio-test.sh — Moiré Studio end to end under Xvfb: the app's --self-test generates with the
# tiny test model through the "generate" action, pauses mid-way for a screenshot of the live
# preview, saves the first image and a screenshot with the history, and exits. Then checks:
# the PNG has the A1111 parameters (read back by `moire info --image`), the screenshots are
# PNGs, LANGUAGE=de gives a German UI, and a missing model is reported, not crashed on.
#   studio-test.sh STUDIO_EXE MOIRE_EXE BUILD_PO_DIR
# $MOIRE_SCREENSHOT_DIR: also copy the screenshots there (docs/screenshots).
set -uo pipefail
studio=$1 moire=$2 po_build=$3
data=${MOIRE_TEST_DATA:?}
model=$data/golden/tiny_qkv.safetensors

if ! command -v xvfb-run >/dev/null; then
    echo "SKIP: xvfb-run not installed (apt-get install xvfb xauth)"
    exit 77
fi

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0 checks=0
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    checks=$((checks + 1))
    if "$@"; then echo "ok - $what"; else echo "not ok - $what"; fail=$((fail + 1)); fi
}
is_png() { [ "$(head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

# meson builds po/LANG/LC_MESSAGES/moire-LANG.mo; gettext wants a locale tree of moire.mo.
for mo in "$po_build"/*/LC_MESSAGES/*.mo; do
    lang=$(basename "$(dirname "$(dirname "$mo")")")
    mkdir -p "$T/locale/$lang/LC_MESSAGES"
    cp "$mo" "$T/locale/$lang/LC_MESSAGES/moire.mo"
done

export GTK_A11Y=none GSETTINGS_BACKEND=memory MOIRE_LOCALEDIR=$T/locale NO_AT_BRIDGE=1
# The cairo renderer: same pixels as GL under Xvfb's llvmpipe, and a second faster to start.
export GSK_RENDERER=${GSK_RENDERER:-cairo}
unset MOIRE_MODEL
xvfb=(xvfb-run -a -s '-screen 0 1280x800x24')

# 1. Two generations with screenshots, in English (the second run starts at seed 7 + 3).
LANGUAGE=en "${xvfb[@]}" "$studio" --self-test --model "$model" --prompt goldfish --steps 24 --batch 3 \
    --seed 7 --runs 2 --pause-at-step 12 --timeout 40 \
    --output "$T/out.png" --screenshot "$T/studio-history.png" --screenshot-mid "$T/studio-generating.png" \
    >"$T/en.log" 2>&1
rc=$?
cat "$T/en.log"
check "self-test exits 0" [ "$rc" -eq 0 ]
check "it paused mid-generation for the preview screenshot" grep -q "paused at step 12" "$T/en.log"
check "2 runs of 3: 6 results in the history" grep -q "6 images in the history" "$T/en.log"
check "output is a PNG" is_png "$T/out.png"
"$moire" info --image "$T/out.png" >"$T/info.txt" 2>&1
check "output carries its parameters" grep -q "Steps: 24, Sampler: DDPM.*Seed: 10, Size: 64x64" "$T/info.txt"
check "output carries the moire JSON" grep -q '"class_name": "goldfish' "$T/info.txt"
check "mid-generation screenshot is a PNG" is_png "$T/studio-generating.png"
check "history screenshot is a PNG" is_png "$T/studio-history.png"
check "no GTK criticals or warnings" bash -c "! grep -E 'CRITICAL|Gtk-WARNING|GLib-GObject-WARNING' '$T/en.log'"

# 2. German: LANGUAGE=de with no other locale set (CI), and a German screenshot.
env -u LANG -u LC_ALL -u LC_MESSAGES LANGUAGE=de "${xvfb[@]}" "$studio" --self-test --model "$model" \
    --prompt goldfish --steps 6 --batch 2 --seed 3 --timeout 40 \
    --screenshot "$T/studio-de.png" >"$T/de.log" 2>&1
rc=$?
cat "$T/de.log"
check "German self-test exits 0" [ "$rc" -eq 0 ]
check "LANGUAGE=de shows German" grep -q "generate button: _Generieren" "$T/de.log"
check "German screenshot is a PNG" is_png "$T/studio-de.png"

# 3. French labels too.
env -u LANG -u LC_ALL -u LC_MESSAGES LANGUAGE=fr "${xvfb[@]}" "$studio" --self-test --model "$model" \
    --prompt goldfish --steps 2 --timeout 40 >"$T/fr.log" 2>&1
check "LANGUAGE=fr shows French" grep -q "generate button: _Générer" "$T/fr.log"

# 4. A model that does not exist: a message and exit status 1, not a crash.
"${xvfb[@]}" "$studio" --self-test --model "$T/missing.safetensors" --timeout 20 >"$T/missing.log" 2>&1
rc=$?
cat "$T/missing.log"
check "missing model: exit status 1" [ "$rc" -eq 1 ]
check "missing model: says so" grep -qi "missing.safetensors" "$T/missing.log"

# 5. DMCMC stream: one Generate, 2 rounds of 3 variations into the history, then it stops.
LANGUAGE=en "${xvfb[@]}" "$studio" --self-test --model "$model" --prompt goldfish --steps 5 --batch 3 \
    --seed 7 --stream 2 --timeout 40 --output "$T/stream.png" --screenshot "$T/studio-dmcmc-stream.png" \
    >"$T/stream.log" 2>&1
rc=$?
cat "$T/stream.log"
check "stream: exits 0" [ "$rc" -eq 0 ]
check "stream: 2 rounds" grep -q "stream rounds 2" "$T/stream.log"
check "stream: 2 rounds of 3 in the history" grep -q "6 images in the history" "$T/stream.log"
"$moire" info --image "$T/stream.png" >"$T/stream-info.txt" 2>&1
check "stream: output made by DMCMC" grep -q "Sampler: DMCMC.*NFE: 10" "$T/stream-info.txt"
check "stream: output carries the dmcmc JSON" grep -q '"sampler": "dmcmc"' "$T/stream-info.txt"
check "stream: screenshot is a PNG" is_png "$T/studio-dmcmc-stream.png"
check "stream: no GTK criticals or warnings" bash -c "! grep -E 'CRITICAL|Gtk-WARNING|GLib-GObject-WARNING' '$T/stream.log'"

# 6. Expert-routing overlay with the EC-DiT test model (experts per token).
LANGUAGE=en "${xvfb[@]}" "$studio" --self-test --model "$(dirname "$model")/tiny_ecdit.safetensors" \
    --prompt "a red apple" --steps 12 --seed 3 --routing --timeout 40 \
    --screenshot "$T/studio-routing.png" >"$T/routing.log" 2>&1
rc=$?
cat "$T/routing.log"
check "routing: exits 0" [ "$rc" -eq 0 ]
check "routing: the result has its map" grep -q "routing map: Experts per token" "$T/routing.log"
check "routing: screenshot is a PNG" is_png "$T/studio-routing.png"

# 7. German found next to the binary: no MOIRE_LOCALEDIR, only the build tree's po/ (meson
#    writes po/LANG/LC_MESSAGES/moire.mo there); numbers with the German decimal comma.
env -u MOIRE_LOCALEDIR -u LANG -u LC_ALL -u LC_MESSAGES LANGUAGE=de "${xvfb[@]}" "$studio" --self-test \
    --model "$model" --prompt goldfish --steps 2 --timeout 40 >"$T/de-tree.log" 2>&1
rc=$?
cat "$T/de-tree.log"
check "German from the build tree: exits 0" [ "$rc" -eq 0 ]
check "German from the build tree (no MOIRE_LOCALEDIR)" grep -q "generate button: _Generieren" "$T/de-tree.log"
check "German decimal comma: \"1,2 Mio. Parameter\"" grep -q "[0-9],[0-9] Mio\. Parameter" "$T/de-tree.log"

# 8. No D-Bus session and a fresh HOME, GSettings' own default backend (dconf, which cannot
#    write without a bus): the model still loads, a generation runs, and the app says that
#    settings are kept in memory. (Where dbus-launch exists GLib starts a bus by itself;
#    then there is nothing to fall back from and only the generation is checked.)
mkdir -p "$T/fresh-home"
# The sanitizers' settings go through (a -Db_sanitize build: its suppressions and log path).
sanitizer_env=()
for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; do
    [ -n "${!v:-}" ] && sanitizer_env+=("$v=${!v}")
done
env -i PATH="$PATH" HOME="$T/fresh-home" LANGUAGE=en GTK_A11Y=none NO_AT_BRIDGE=1 \
    GSK_RENDERER="$GSK_RENDERER" OMP_NUM_THREADS=2 "${sanitizer_env[@]}" \
    "${xvfb[@]}" "$studio" --self-test --model "$model" --prompt goldfish --steps 2 --timeout 40 \
    >"$T/nodbus.log" 2>&1
rc=$?
cat "$T/nodbus.log"
check "no D-Bus: exits 0 with a result" [ "$rc" -eq 0 ]
check "no D-Bus: the model loaded" grep -q "self-test: model info: tiny_qkv" "$T/nodbus.log"
if ! command -v dbus-launch >/dev/null; then
    check "no D-Bus: says settings are kept in memory" grep -q "settings note: Settings cannot be saved" "$T/nodbus.log"
fi

# 9. The queue: Generate pressed twice more while the first runs: three generations, one
#    after the other, all in the history.
LANGUAGE=en "${xvfb[@]}" "$studio" --self-test --model "$model" --prompt goldfish --steps 4 --batch 2 \
    --seed 11 --queue 2 --timeout 60 --output "$T/queue.png" >"$T/queue.log" 2>&1
rc=$?
cat "$T/queue.log"
check "queue: exits 0" [ "$rc" -eq 0 ]
check "queue: 2 queued while the first ran" grep -q "queued 2 while running" "$T/queue.log"
check "queue: each waited its turn" grep -q "a queued one follows (1 waiting)" "$T/queue.log"
check "queue: 3 runs of 2 in the history" grep -q "6 images in the history" "$T/queue.log"
"$moire" info --image "$T/queue.png" >"$T/queue-info.txt" 2>&1
check "queue: the last queued job kept its own seed (11 + 2 + 2)" grep -q "Seed: 15," "$T/queue-info.txt"

# 10. History kept between launches (MOIRE_STUDIO_HISTORY_DIR stands in for
#     XDG_DATA_HOME/moire/history): a second launch starts with the first one's results.
for run in 1 2; do
    MOIRE_STUDIO_HISTORY_DIR=$T/history LANGUAGE=en "${xvfb[@]}" "$studio" --self-test --model "$model" \
        --prompt goldfish --steps 2 --batch 2 --seed $((20 + run * 2)) --timeout 40 >"$T/history$run.log" 2>&1
done
cat "$T/history2.log"
check "history: the first launch starts empty" grep -q "history restored: 0" "$T/history1.log"
check "history: the second launch gets the first one's 2 results" grep -q "history restored: 2" "$T/history2.log"
check "history: 4 in the strip after the second launch" grep -q "4 images in the history" "$T/history2.log"
check "history: kept as PNGs with their parameters" bash -c "ls '$T/history'/*-22.png '$T/history'/*-25.png >/dev/null"

# 11. Ctrl+Enter wherever the focus is, pressed for real (xdotool) in a plain (not self-test)
#     run: in the prompt, with the Sampler drop-down's list open (a popover: a native of its
#     own), and on the closed drop-down. Each generation leaves a PNG in the history folder.
#     The click goes to the Sampler drop-down of the default 1170×750 window with the tiny
#     model (a latent model: the VAE row is shown above it).
if command -v xdotool >/dev/null; then
    cat > "$T/keys.sh" <<KEYS
#!/bin/bash
"$studio" --model "$model" --steps 4 --prompt goldfish >"$T/keys-studio.log" 2>&1 &
pid=\$!
for i in \$(seq 1 60); do xdotool search --name "Moiré Studio" >/dev/null 2>&1 && break; sleep 0.5; done
sleep 3
xdotool windowfocus --sync "\$(xdotool search --name 'Moiré Studio' | head -1)" 2>/dev/null
count() { ls "$T/keys-history" 2>/dev/null | wc -l; }
wait_for() { for i in \$(seq 1 40); do [ "\$(count)" -ge "\$1" ] && break; sleep 0.5; done; echo "keys: \$2: \$(count)"; }
xdotool key ctrl+Return; wait_for 1 "in the prompt"
xdotool mousemove 240 319 click 1; sleep 1.5
xdotool key ctrl+Return; wait_for 2 "drop-down open"
xdotool key Escape; sleep 1
xdotool key ctrl+Return; wait_for 3 "drop-down focused"
kill \$pid
KEYS
    chmod +x "$T/keys.sh"
    MOIRE_STUDIO_HISTORY_DIR=$T/keys-history LANGUAGE=en "${xvfb[@]}" "$T/keys.sh" >"$T/keys.log" 2>&1
    cat "$T/keys.log"
    check "Ctrl+Enter in the prompt generates" grep -q "keys: in the prompt: 1" "$T/keys.log"
    check "Ctrl+Enter with a drop-down's list open generates" grep -q "keys: drop-down open: 2" "$T/keys.log"
    check "Ctrl+Enter on a focused drop-down generates" grep -q "keys: drop-down focused: 3" "$T/keys.log"
fi

if [ -n "${MOIRE_SCREENSHOT_DIR:-}" ]; then
    mkdir -p "$MOIRE_SCREENSHOT_DIR"
    cp "$T/studio-generating.png" "$T/studio-history.png" "$T/studio-de.png" \
       "$T/studio-dmcmc-stream.png" "$T/studio-routing.png" "$MOIRE_SCREENSHOT_DIR/"
    echo "screenshots copied to $MOIRE_SCREENSHOT_DIR"
fi

echo "studio: checks: $checks, failures: $fail"
[ "$fail" -eq 0 ]
