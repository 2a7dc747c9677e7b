# golden.cmake — runs front_test on one case and compares its output with golden files.
#
#   cmake -DDRIVER=front_test -DWORKDIR=dir -DINPUT=file.dhx -DEXPECTED=base [-DARGS=a|b|c]
#         [-DGENERATE=kind] -P golden.cmake
#
# stderr must equal <base>.expected exactly; stdout must equal <base>.stdout when that file
# exists. The exit status must be 1 when the expected stderr holds an error, else 0.
# GENERATE writes INPUT (relative to WORKDIR) first, for inputs too big to keep in the repo.
# With DHX_UPDATE_GOLDEN=1 in the environment the golden files are rewritten instead.
cmake_minimum_required(VERSION 3.20)

if(GENERATE)
  set(n 100000)
  if(GENERATE STREQUAL "parens")      # 100k nested parentheses
    string(REPEAT "(" ${n} open)
    string(REPEAT ")" ${n} close)
    set(text "model deep = f(${open}1${close})\n")
  elseif(GENERATE STREQUAL "minus")   # 100k unary minuses: Bison's own stack limit
    string(REPEAT "- " ${n} minus)
    set(text "train { steps: ${minus}1 }\n")
  elseif(GENERATE STREQUAL "sum")     # a 100k-term sum: a tree 100k deep without brackets
    string(REPEAT " + 1" ${n} terms)
    set(text "train { steps: 1${terms} }\n")
  elseif(GENERATE STREQUAL "braces")  # 100k nested blocks
    string(REPEAT "a { " ${n} open)
    string(REPEAT "}" ${n} close)
    set(text "schedule { ${open}${close} }\n")
  else()
    message(FATAL_ERROR "unknown GENERATE kind '${GENERATE}'")
  endif()
  file(WRITE "${WORKDIR}/${INPUT}" "${text}")
endif()

string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND ${DRIVER} ${args} ${INPUT}
                WORKING_DIRECTORY ${WORKDIR}
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)

if("$ENV{DHX_UPDATE_GOLDEN}" STREQUAL "1")
  file(WRITE "${EXPECTED}.expected" "${err}")
  if(EXISTS "${EXPECTED}.stdout" OR NOT out STREQUAL "")
    file(WRITE "${EXPECTED}.stdout" "${out}")
  endif()
  return()
endif()

set(failed "")
file(READ "${EXPECTED}.expected" want_err)
if(NOT err STREQUAL want_err)
  string(APPEND failed "stderr differs from ${EXPECTED}.expected\n"
         "---- expected ----\n${want_err}---- actual ----\n${err}---- end ----\n")
endif()
if(EXISTS "${EXPECTED}.stdout")
  file(READ "${EXPECTED}.stdout" want_out)
  if(NOT out STREQUAL want_out)
    string(APPEND failed "stdout differs from ${EXPECTED}.stdout\n"
           "---- expected ----\n${want_out}---- actual ----\n${out}---- end ----\n")
  endif()
endif()
if(want_err MATCHES "error:")
  set(want_rc 1)
else()
  set(want_rc 0)
endif()
if(NOT rc STREQUAL want_rc)
  string(APPEND failed "exit status ${rc}, expected ${want_rc}\n")
endif()
if(failed)
  message(FATAL_ERROR "${failed}")
endif()
