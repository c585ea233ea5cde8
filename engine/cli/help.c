/* help.c — the usage texts of `moire` and of each command (`moire help CMD`, `--help`). */
#include "cli.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Help
 * ---------------------------------------------------------------------------------------- */

static const char usage_main[] =
    "Usage: moire COMMAND [OPTIONS]\n"
    "\n"
    "Moiré generates images with Mixture-of-Experts diffusion transformers (DiT-MoE).\n"
    "\n"
    "Commands:\n"
    "  generate   make images from a prompt or class and write PNGs with their settings\n"
    "  info       describe a model (--model) or the settings stored in a PNG (--image)\n"
    "  convert    write a PyTorch checkpoint (.pt) as a safetensors model file\n"
    "  forward    run one model evaluation on a .npy tensor (for checking numerics)\n"
    "  bench      time random-weight models of the released geometries (ms per step)\n"
    "  eval       measure a model: FID and prompt adherence against an image classifier\n"
    "  help CMD   show the options of a command\n"
    "\n"
    "Options:\n"
    "  -h, --help     show this help\n"
    "  -V, --version  show the version\n"
    "\n"
    "Example:\n"
    "  moire generate --model dit_moe_s_8E2A.safetensors --prompt \"golden retriever\" \\\n"
    "                 --seed 7 --output dog.png\n";

static const char usage_generate[] =
    "Usage: moire generate [--model FILE] (--prompt TEXT | --class N) --output FILE.png [OPTIONS]\n"
    "\n"
    "Generates images and writes each as a PNG whose \"parameters\" text (A1111 layout) and\n"
    "\"moire\" text (JSON) record everything needed to make it again.\n"
    "\n"
    "  --model FILE        the model (.safetensors or a released .pt); default: $MOIRE_MODEL,\n"
    "                      else the embedded model (share/moire/models, data/models)\n"
    "  --prompt TEXT       what to draw: text for text models (EC-DiT); for class models a class\n"
    "                      name (closest match) or a number\n"
    "  --class N           the class number instead of a prompt\n"
    "  --negative TEXT     a class used as the unconditional branch of guidance (default: none)\n"
    "  --seed N            random seed (default 42; -1 = a random seed); image i uses seed + i\n"
    "  --steps N           sampler steps (default: the model's, 250 for DDPM, 50 for flow)\n"
    "  --cfg X             classifier-free guidance scale (default: the model's; 1 = none)\n"
    "  --cfg-mode MODE     default, all (every channel) or first3 (the official DiT quirk)\n"
    "  --sampler NAME      default, ddpm, rf-euler, ddim, euler, euler-a, heun, dpm++2m,\n"
    "                      dmcmc (A1111 labels and ComfyUI names work too)\n"
    "  --schedule NAME     default, uniform, karras\n"
    "  --eta X             DDIM eta (default 0: deterministic)\n"
    "  --width W, --height H\n"
    "                      image size in pixels (default: the model's trained size); a\n"
    "                      multiple of 8 x patch size for latent models, of the patch size\n"
    "                      for pixel models\n"
    "  --batch N           images to make (default 1)\n"
    "  --init FILE.png     start from this image (img2img); needs --strength\n"
    "  --strength X        0 < X <= 1: how much of the schedule to run from --init\n"
    "  --mask FILE.png     inpainting mask (white = regenerate, black = keep); needs --init\n"
    "  --vae FILE|DIR      SD-VAE for latent models (sd-vae-ft-mse: a diffusers directory or\n"
    "                      .safetensors; docs/VAE.md); without it a latent model's image is\n"
    "                      an approximate colour preview\n"
    "  --threads N         CPU threads (default 0 = all cores)\n"
    "  --device DEV        auto (default), cpu or cuda\n"
    "  --output FILE.png   where to write; with --batch N > 1 the images are FILE-0.png,\n"
    "                      FILE-1.png, … (the index goes before the extension)\n"
    "  --quiet             no progress on stderr\n"
    "  --routing-map FILE.png\n"
    "                      also write which experts processed each token, averaged over the\n"
    "                      steps: mean over the MoE layers, then each layer (experts per\n"
    "                      token for EC-DiT, expert colours for DiT-MoE; docs/ECDIT.md)\n"
    "\n"
    "DMCMC (Denoising Langevin Gibbs, docs/DMCMC.md): about 10 model evaluations per image.\n"
    "  --sampler dmcmc     chains over (image, noise level) + a short integrator; --steps N\n"
    "                      sets the integrator's steps (default 5)\n"
    "  --stream N          keep the chains and emit N rounds of new variations (FILE-0.png,\n"
    "                      FILE-1.png, …; FILE-ROUND-IMAGE.png with --batch), each written as\n"
    "                      soon as it exists; implies --sampler dmcmc\n"
    "  --dmcmc-eta X       Langevin step size (default 0.08)\n"
    "  --dmcmc-skip N      Langevin sweeps per image (default 4)\n"
    "  --dmcmc-integrator NAME\n"
    "                      euler, heun, stochastic-heun, ddim, dpm++2m (default)\n"
    "  --dmcmc-burn-in N   sweeps after the chains' first sample (default 8)\n"
    "  --dmcmc-level HOW   where a chain's noise level comes from: classifier (the model's\n"
    "                      MODEL-levels.safetensors), residual (estimated from the model\n"
    "                      itself; 6 NFE of calibration) or auto (default: the classifier\n"
    "                      when the model has one)\n"
    "The model evaluations per image (and the one-off burn-in) are reported on stderr.\n"
    "\n"
    "Streams for browsing (with --stream N; docs/DMCMC.md, \"Streams\"):\n"
    "  --stream-mode MODE  chains (default: DMCMC chains from noise, as above), new (fresh\n"
    "                      pictures every round: --sampler's plain run with new seeds, or\n"
    "                      DMCMC chains with --sampler dmcmc) or vary (variations of --vary)\n"
    "  --vary FILE.png     variations of this picture: chains start from it (implies\n"
    "                      --stream-mode vary)\n"
    "  --variation-strength X\n"
    "                      0..1 (default 0.5): how far the variations may move from the\n"
    "                      picture (the chains' start level and Langevin step)\n"
    "  --stream-guard D    kick a chain whose new picture is within RMS distance D of its\n"
    "                      previous one (default 0.04 for new and vary, 0 = off)\n"
    "\n"
    "The written paths are printed on stdout, one per line. Ctrl-C stops the run (exit\n"
    "status 130) and writes nothing (a stream keeps the rounds already written).\n";

static const char usage_info[] =
    "Usage: moire info --model FILE\n"
    "       moire info --image FILE.png\n"
    "\n"
    "  --model FILE   print the model's configuration, size, defaults and classes\n"
    "  --image FILE   print the generation settings stored in a PNG (\"parameters\" text,\n"
    "                 its fields, and the \"moire\" JSON); exit status 1 when it has none\n";

static const char usage_forward[] =
    "Usage: moire forward --model FILE --input X.npy --t T (--class N | --prompt TEXT)\n"
    "                     --output Y.npy [--threads N] [--device DEV]\n"
    "\n"
    "Runs one model evaluation. X is [n, C, h, w] or [C, h, w] (float32; float64/16 and\n"
    "int32/64 are converted); t and the class apply to all n. Y is [n, C_out, h, w] (or\n"
    "[C_out, h, w]) float32. T is the DDPM timestep (0..T-1) or the flow time (0..1).\n";

static const char usage_bench[] =
    "Usage: moire bench [--geometry LIST] [--resolution PX] [--batch N] [--steps N]\n"
    "                   [--device DEV] [--precision fp32|bf16] [--threads N]\n"
    "\n"
    "Times the forward pass of random-weight models of the released DiT-MoE geometries,\n"
    "built in memory (no files): classifier-free guidance batched (2 x batch images per\n"
    "step), one warm-up step, then --steps timed steps. Prints ms per step, seconds for the\n"
    "family's default step count (50 rectified-flow steps for XL/G, 250 DDPM for S/B),\n"
    "images/s, peak memory and the achieved weight bandwidth against a measured copy.\n"
    "\n"
    "  --geometry LIST   comma-separated: S/2, B/2, XL/2, G/2, tiny, or GEOMETRY@RES;\n"
    "                    default on CUDA: S/2,B/2,XL/2,G/2 at 256 and XL/2@512;\n"
    "                    on the CPU: S/2 (give a list to run others)\n"
    "  --resolution PX   image size for entries without @RES (default 256)\n"
    "  --batch N         images per step before CFG doubling (default 1)\n"
    "  --steps N         timed steps per model (default 10 on CUDA, 1 on the CPU)\n"
    "  --precision P     CUDA weight storage: bf16 (default) or fp32\n"
    "  --device DEV      auto (default), cpu or cuda\n";

static const char usage_convert[] =
    "Usage: moire convert IN.pt OUT.safetensors\n"
    "\n"
    "Writes the state dict of a PyTorch checkpoint (torch.save, e.g. the released\n"
    "dit_moe_*.pt) as a safetensors file: the same tensors bit for bit in their own dtype,\n"
    "with the configuration (inferred from the keys and shapes) in \"moire.config\" and, for\n"
    "a 1000-class model, the ImageNet class names. {\"ema\": …}, {\"model\": …} and\n"
    "\"module.\" wrappers are removed. The pickle is read with an allow-list and nothing in\n"
    "it is executed; see docs/CHECKPOINTS.md. Written atomically: no partial output.\n"
    "Any command also loads a .pt directly; converting once makes later loads faster and\n"
    "keeps the class names with the model.\n";

static const char usage_eval[] =
    "Usage: moire eval [--model FILE] [--classifier FILE] [--images N] [--classes C]\n"
    "                  [--seed S] [OPTIONS]\n"
    "\n"
    "Measures a model against an image classifier: generates N images spread evenly over\n"
    "C of the classifier's classes (a class's name is the prompt) and reports the FID of\n"
    "their classifier features against the classifier's reference statistics, prompt\n"
    "adherence (how often the prompted class is the classifier's top 1, and among its top\n"
    "5), the model evaluations (NFE) per image and the seconds per image. A classifier with\n"
    "random weights gives meaningless numbers; tools/train/train_classifier.py trains one.\n"
    "\n"
    "  --model FILE        the model; default: $MOIRE_MODEL, else the embedded model\n"
    "  --classifier FILE   the classifier (.safetensors); default: $MOIRE_CLASSIFIER, else\n"
    "                      MODEL-features.safetensors next to the model file\n"
    "  --images N          images to make (default 100; at least 2 for the FID)\n"
    "  --classes C         classes to prompt, 1..min(N, K) of the classifier's K (default\n"
    "                      min(N, K)). Class c of the C is class floor(c*K/C) of the K, and\n"
    "                      image j prompts class floor(j*C/N) of the C: one class each when\n"
    "                      N = C, else runs of about N/C consecutive images per class\n"
    "  --seed S            image j uses seed S + j (default 0; -1 = a random S)\n"
    "  --batch B           images generated together within a class's run (default 8);\n"
    "                      with --sampler dmcmc, images classified together\n"
    "  --sampler, --steps, --cfg, --cfg-mode, --schedule, --eta, --dmcmc-eta, --dmcmc-skip,\n"
    "  --dmcmc-integrator, --dmcmc-burn-in, --dmcmc-level\n"
    "                      as for 'moire generate' (default: the model's settings)\n"
    "  --threads N         CPU threads (default 0 = all cores)\n"
    "  --device DEV        auto (default), cpu or cuda\n"
    "  --json FILE         also write the results as one JSON object\n"
    "  --save-grid FILE.png\n"
    "                      the images as a grid to look at: 10 columns, cells as generated\n"
    "                      (the first 400 images)\n"
    "  --features FILE.npy every image's classifier features, then its prompted class and\n"
    "                      that class's rank (0 = top 1): float32 [N, D + 2], for the\n"
    "                      statistics of tools/eval/ (KID, diversity, recall)\n"
    "  --quiet             no progress on stderr\n"
    "\n"
    "The summary goes to stdout. Images of another size than the classifier's input are\n"
    "resized (area average). A CFG step counts as one evaluation (the conditional and\n"
    "unconditional halves run as one batch). Ctrl-C stops the run (exit status 130) and\n"
    "writes nothing.\n"
    "\n"
    "With --sampler dmcmc each class's run of images is one persistent chain, as in\n"
    "'moire generate --stream': a stream seeded with S + (its first image), burnt in once,\n"
    "then one emission per image. \"NFE per image\" counts an emission as the paper does\n"
    "(skip + integrator + Tweedie); \"NFE per image incl. burn-in\" is every evaluation of\n"
    "the run (burn-in and re-seeds included) divided by N, so fewer classes amortise the\n"
    "burn-in over more images. For the other samplers the two are equal.\n";

int print_help(const char *command)
{
    if (!command) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(command, "generate") == 0)
        fputs(usage_generate, stdout);
    else if (strcmp(command, "info") == 0)
        fputs(usage_info, stdout);
    else if (strcmp(command, "forward") == 0)
        fputs(usage_forward, stdout);
    else if (strcmp(command, "convert") == 0)
        fputs(usage_convert, stdout);
    else if (strcmp(command, "bench") == 0)
        fputs(usage_bench, stdout);
    else if (strcmp(command, "eval") == 0)
        fputs(usage_eval, stdout);
    else if (strcmp(command, "help") == 0)
        fputs(usage_main, stdout);
    else {
        error_line("unknown command '%s'; the commands are generate, info, forward, convert, "
                   "bench and eval (see 'moire --help')",
                   command);
        return EXIT_USAGE;
    }
    return 0;
}

void print_main_usage(FILE *stream)
{
    fputs(usage_main, stream);
}
