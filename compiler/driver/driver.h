// driver.h — subcommands of dhxc that are not compilation.
#ifndef DHX_DRIVER_H
#define DHX_DRIVER_H

// `dhxc data -o PREFIX [--val-fraction F] FILE...`: byte-level (vocab 256) token shards in
// llm.c's layout, PREFIX_train.bin and PREFIX_val.bin. argv[0] is "data".
int dhx_data_main(int argc, char **argv);

// `dhxc fmt [-i | --check] FILE...`: the canonical form of each file on stdout, or written
// back in place, or the names of the files that are not canonical. argv[0] is "fmt".
int dhx_fmt_main(int argc, char **argv);

// `dhxc convert --from dhx|hf-gpt2|hf-llama --to dhx|hf-gpt2|hf-llama IN OUT`: a safetensors
// checkpoint renamed (and transposed where layouts differ) between DHX's parameter names and
// Hugging Face's GPT-2 or Llama names. argv[0] is "convert".
int dhx_convert_main(int argc, char **argv);

#endif
