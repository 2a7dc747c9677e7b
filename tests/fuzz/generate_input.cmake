# generate_input.cmake — writes a huge input for a front-end golden test into the build tree
# (too big for the repository), then runs tests/front/golden.cmake on it.
#
#   cmake -DKIND=kind -DGOLDEN=tests/front/golden.cmake -DDRIVER=front_test -DWORKDIR=dir
#         -DINPUT=file.dhx -DEXPECTED=base -P generate_input.cmake
#
# The 10 MB kinds are many small tokens: each must take a few seconds and memory in proportion
# to the file, never time that grows with the square of it.
cmake_minimum_required(VERSION 3.20)

set(mb10 10485760)
# repeat(UNIT PREFIX SUFFIX): PREFIX, UNIT repeated to about 10 MB, SUFFIX
function(repeat unit prefix suffix)
  string(LENGTH "${unit}" n)
  math(EXPR count "${mb10} / ${n}")
  string(REPEAT "${unit}" ${count} body)
  set(text "${prefix}${body}${suffix}" PARENT_SCOPE)
endfunction()

if(KIND STREQUAL "items")         # 10 MB of one definition over and over
  repeat("layer a() {}\n" "" "")
elseif(KIND STREQUAL "gpus")      # 10 MB of items that are each an error in the configuration
  repeat("gpu a { flops: 1 }\n" "" "")
elseif(KIND STREQUAL "presets")   # 10 MB of cluster presets that name an unknown one
  repeat("cluster a = b()\n" "" "")
elseif(KIND STREQUAL "tokens")    # a 10 MB line of tokens after a syntax error
  repeat(" + 1" "x = 1" "\n")
elseif(KIND STREQUAL "uses")      # 10 MB of `use`
  repeat("use std.gpt\n" "" "")
elseif(KIND STREQUAL "calls")     # 100k nested calls with named arguments
  string(REPEAT "f(a: " 100000 open)
  string(REPEAT ")" 100000 close)
  set(text "model deep = ${open}1${close}\n")
else()
  message(FATAL_ERROR "unknown KIND '${KIND}'")
endif()
file(WRITE "${WORKDIR}/${INPUT}" "${text}")
include(${GOLDEN})
