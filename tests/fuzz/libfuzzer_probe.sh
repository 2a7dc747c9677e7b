# libfuzzer_probe.sh — sourced by the fuzz scripts: exits 77 (CTest: skipped) unless $clang
# exists and can link a libFuzzer binary. Run in the script's work folder.
if ! command -v "$clang" >/dev/null; then echo "no $clang: skipped"; exit 77; fi
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' > probe.c
if ! "$clang" -fsanitize=fuzzer probe.c -o probe 2>/dev/null; then
  echo "$clang cannot link libFuzzer: skipped"; exit 77
fi
