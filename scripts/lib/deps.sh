# Sourced by scripts/test and scripts/demo: installs the Debian 12 packages
# keysem's build needs, and nothing when they are already there, so that
# repeated runs stay fast and work offline.

# libboost1.81-dev, never libboost-dev: the latter is Boost 1.74, which
# lacks what keysem uses from Asio.
# libhiredis-dev, redis-server: keysem::redis (a RESP codec) and its tests.
# curl: the http_server example's end-to-end test and the demo talk HTTP with it.
KEYSEM_DEBIAN_PACKAGES=(
    cmake ninja-build g++ pkg-config
    libboost1.81-dev libxxhash-dev doctest-dev libbenchmark-dev
    libhiredis-dev redis-server
    curl
)

keysem_section() {
    printf '\n==> %s\n' "$*"
}

keysem_is_installed() {
    # `dpkg -s` also succeeds for removed-but-configured packages; the
    # status line tells them apart.
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

keysem_install_deps() {
    local missing=() pkg
    for pkg in "${KEYSEM_DEBIAN_PACKAGES[@]}"; do
        keysem_is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        echo "all packages present"
        return 0
    fi

    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "missing packages: ${missing[*]}; run as root or install sudo" >&2
            return 1
        fi
    fi
    echo "installing: ${missing[*]}"
    # env, because sudo would drop an exported DEBIAN_FRONTEND.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# Prints the command prefix sanitizer runs need. GCC 12's TSan (and ASan)
# cannot map their shadow memory when the kernel randomizes mmap with more
# than 28 bits (the default on recent kernels); running without ASLR avoids
# it. Containers whose seccomp profile forbids that get a warning instead.
keysem_sanitizer_runner() {
    local bits
    bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
    if ((bits <= 28)); then
        return 0
    fi
    if setarch "$(uname -m)" -R true 2>/dev/null; then
        echo "setarch $(uname -m) -R"
    else
        echo "warning: vm.mmap_rnd_bits=$bits and ASLR cannot be disabled;" \
             "sanitizer runs may fail (fix: sysctl vm.mmap_rnd_bits=28)" >&2
    fi
}
