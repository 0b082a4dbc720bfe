# Unity builds for the test executables: every executable target named *_test, in DIR
# and below, compiles its sources as one translation unit (GoogleTest's and the
# project's headers are parsed once per executable). The libraries and the shipped
# binaries are built file by file as before. A test file whose file-local helpers clash
# with a sibling's is compiled on its own rather than renamed (SUBLEASE_UNITY_ALONE).
set(SUBLEASE_UNITY_ALONE
  sync/informer_test.cc  # its Recorder is not fake_apiserver_test.cc's
)

function(sublease_unity_tests dir)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t ${targets})
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE" AND t MATCHES "_test$")
      set_target_properties(${t} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0)
      foreach(f ${SUBLEASE_UNITY_ALONE})
        set_source_files_properties(${PROJECT_SOURCE_DIR}/${f} TARGET_DIRECTORY ${t}
                                    PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
      endforeach()
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(d ${subdirs})
    sublease_unity_tests(${d})
  endforeach()
endfunction()
