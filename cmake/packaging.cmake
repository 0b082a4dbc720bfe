# Installation layout and the Debian package (CPack). Included last from the top-level
# CMakeLists.txt; each folder's CMakeLists installs its own targets (daemon/, cni/,
# ctl/, schema/), this file installs the host files and configures CPack.
#
#   cmake --build build && (cd build && cpack -G DEB)   ->  build/sublease_<ver>_<arch>.deb
#
# Layout (docs/install-host.md):
#   /usr/bin/subleased, /usr/bin/subleasectl
#   /usr/lib/cni/{sublease,kube-ovn}, /opt/cni/bin/{sublease,kube-ovn}   (the plugin)
#   /lib/systemd/system/subleased.service
#   /etc/sublease/subleased.yaml, /etc/sublease/subnets.d/example-macvlan.yaml (conffiles)
#   /usr/share/sublease/schema/, /usr/share/doc/sublease/

install(FILES ${PROJECT_SOURCE_DIR}/systemd/subleased.service
        DESTINATION /lib/systemd/system COMPONENT sublease)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/subleased.yaml
        DESTINATION /etc/sublease COMPONENT sublease)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/example-subnet.yaml
        DESTINATION /etc/sublease/subnets.d RENAME example-macvlan.yaml COMPONENT sublease)
install(FILES
          ${PROJECT_SOURCE_DIR}/README.md
          ${PROJECT_SOURCE_DIR}/docs/install-host.md
          ${PROJECT_SOURCE_DIR}/docs/configuration.md
          ${PROJECT_SOURCE_DIR}/docs/cni.md
          ${PROJECT_SOURCE_DIR}/docs/protocol.md
          ${PROJECT_SOURCE_DIR}/docs/subleasectl.md
          ${PROJECT_SOURCE_DIR}/docs/debugging.md
        DESTINATION share/doc/sublease COMPONENT sublease)

set(CPACK_PACKAGE_NAME sublease)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "sublease")
set(CPACK_PACKAGE_CONTACT "sublease maintainers <sublease@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "IP address management for Kubernetes attachment networks (CNI IPAM)")
set(CPACK_PACKAGE_DESCRIPTION
    "subleased allocates addresses for the extra interfaces that Multus adds to pods\n\
(macvlan, ipvlan, bridge, host-device), from Kube-OVN Subnets, with an embedded SQLite\n\
database on each node. The CNI plugin is installed as `sublease` and as `kube-ovn`, so\n\
Kube-OVN's NetworkAttachmentDefinitions work unchanged. subleasectl shows leases,\n\
usage and history on a node.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies are read from the binaries (dpkg-shlibdeps).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "containernetworking-plugins, sqlite3")
# conffiles (dpkg keeps a changed one on upgrade and removes it only on purge) and the
# maintainer scripts (systemd reload; state removed on purge only).
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/deb/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm
    ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Only what the install rules above and in daemon/, cni/, ctl/, schema/ name: tests and
# benchmarks are never installed.
set(CPACK_SOURCE_IGNORE_FILES "/build.*/;/\\\\.git/;/\\\\.state/")
include(CPack)
