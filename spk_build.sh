#!/bin/sh
# Build the Synology DSM 7 package(s) of DSM PACS into dist/ (docs/dsm-package.md).
#
#   make spk        (or ./spk_build.sh with the variables below)
#
#   PYTHON                  build interpreter with pip and Pillow (default: .venv/bin/python)
#   PYTHON_PACKAGE          SynoCommunity interpreter package the SPK depends on (python311)
#   SPK_BUILD               build number after the "-" of the DSM version (default: the UTC
#                           time of the HEAD commit as YYDDDHHMM, so each commit's package
#                           orders after the previous one, in a shallow clone too)
#   SPK_HELP_URL, SPK_SUPPORT_URL, SPK_MAINTAINER_URL, SPK_DISTRIBUTOR, SPK_DISTRIBUTOR_URL
#                           INFO's links and distributor (defaults: placeholders on the
#                           reserved .invalid domain until the project has public pages)
#   SPK_WHEELHOUSE          local wheel directory used instead of a package index (default:
#                           wheelhouse/ when it exists; `make wheelhouse` fills it while online)
#   SPK_CONSTRAINTS         exact pins of the bundled wheels (default: constraints.txt)
#   SPK_EXTRA_REQUIREMENTS  more requirements to bundle, e.g. optional pixel-data decoders
#   SPK_OUT                 output directory (default: dist)
#
#   ./spk_build.sh --version      print the DSM version this checkout builds, and stop
#   ./spk_build.sh --wheelhouse   fill SPK_WHEELHOUSE (default wheelhouse/) with every wheel
#                                 a build needs, both arch families and the build backend,
#                                 so that later builds need no network (`make wheelhouse`)
#
# The package holds every wheel the application needs, so it installs with no
# network. If they are all pure Python the result is one noarch .spk; otherwise
# one .spk per DSM arch family (x86_64, armv8), each with manylinux2014 wheels,
# which load on DSM 7.1's glibc 2.26.
set -eu
umask 022

ROOT=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PYTHON_PACKAGE=${PYTHON_PACKAGE:-python311}
CONSTRAINTS=${SPK_CONSTRAINTS:-$ROOT/constraints.txt}
EXTRA=${SPK_EXTRA_REQUIREMENTS:-}
OUT=${SPK_OUT:-$ROOT/dist}
WHEELHOUSE=${SPK_WHEELHOUSE:-$ROOT/wheelhouse}
FILL_WHEELHOUSE=no
[ "${1:-}" = "--wheelhouse" ] && FILL_WHEELHOUSE=yes

die() {
    echo "spk_build: $*" >&2
    exit 1
}

case $PYTHON_PACKAGE in
    python311) PYVER=3.11 ;;
    python312) PYVER=3.12 ;;
    python313) PYVER=3.13 ;;
    *) die "PYTHON_PACKAGE must be python311, python312 or python313, not $PYTHON_PACKAGE" ;;
esac
CPTAG="cp$(echo "$PYVER" | tr -d .)"

[ -x "$PYTHON" ] || die "no build Python at $PYTHON: run 'make venv' or set PYTHON"
"$PYTHON" -c 'import PIL' 2>/dev/null || die "$PYTHON needs Pillow to draw the icons"

tool() {
    PYTHONPATH="$ROOT/package" "$PYTHON" "$ROOT/dsm/tools/spktool.py" "$@"
}

if [ -z "${SPK_BUILD:-}" ] && [ "$FILL_WHEELHOUSE" = no ]; then
    # DSM refuses to "upgrade" to a lower build, so the number must only grow: the
    # time of the commit built does, and a shallow clone knows it as well as a full
    # one (a commit count would start again at 1 there). Without git, SOURCE_DATE_EPOCH.
    epoch=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)
    epoch=${epoch:-${SOURCE_DATE_EPOCH:-}}
    [ -n "$epoch" ] || die "no commit time (not a git checkout): set SOURCE_DATE_EPOCH to the \
source's time, or SPK_BUILD to a number above the last package's build"
    SPK_BUILD=$(tool build-number "$epoch")
fi
case ${SPK_BUILD:-0} in
    "" | *[!0-9]*) die "SPK_BUILD must be a number, not '$SPK_BUILD'" ;;
esac
BUILD=$(printf '%04d' "$(echo "${SPK_BUILD:-0}" | sed -e 's/^0*//' -e 's/^$/0/')")
FEATURE_VERSION=$(tool version "$ROOT/pyproject.toml")
VERSION="$FEATURE_VERSION-$BUILD"
if [ "${1:-}" = "--version" ]; then
    echo "$VERSION"
    exit 0
fi
# Package Center shows INFO's changelog: this version's items in CHANGELOG.md.
if [ "$FILL_WHEELHOUSE" = no ]; then
    CHANGELOG=$(tool changelog "$ROOT/CHANGELOG.md" "$FEATURE_VERSION")
fi
# No public pages yet: placeholders on .invalid (RFC 2606), which never resolves, so a
# build that does not set them cannot send an administrator to someone else's site.
HELP_URL=${SPK_HELP_URL:-https://dsmpacs.invalid/help}
SUPPORT_URL=${SPK_SUPPORT_URL:-https://dsmpacs.invalid/support}
MAINTAINER_URL=${SPK_MAINTAINER_URL:-https://dsmpacs.invalid/}
DISTRIBUTOR=${SPK_DISTRIBUTOR:-DSM PACS project}
DISTRIBUTOR_URL=${SPK_DISTRIBUTOR_URL:-$MAINTAINER_URL}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/spk-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM

# Where wheels come from: a package index, or only the local wheelhouse (offline).
# Offline, PIP_CONFIG_FILE=/dev/null: the machine's own pip configuration (its
# find-links, say) must not add wheels the wheelhouse lacks.
INDEX="--disable-pip-version-check"
if [ "$FILL_WHEELHOUSE" = no ] && [ -d "$WHEELHOUSE" ]; then
    INDEX="$INDEX --no-index --find-links $WHEELHOUSE"
    export PIP_CONFIG_FILE=/dev/null
    echo "spk_build: offline, wheels from $WHEELHOUSE" >&2
fi
offline_hint() {
    if [ "$FILL_WHEELHOUSE" = no ] && [ -d "$WHEELHOUSE" ]; then
        echo "$WHEELHOUSE lacks a wheel this build needs: run 'make wheelhouse' again while online"
    else
        echo "if no package index is reachable, run 'make wheelhouse' once while online"
    fi
}

if [ "$FILL_WHEELHOUSE" = yes ]; then
    echo "spk_build: filling $WHEELHOUSE for $PYTHON_PACKAGE" >&2
else
    echo "spk_build: DSM PACS $VERSION for $PYTHON_PACKAGE" >&2
fi

# The application as a wheel, then everything it needs for one DSM arch family.
# (The build backend comes from the index or the wheelhouse: pip builds in isolation.)
# shellcheck disable=SC2086 # INDEX is a list of options
"$PYTHON" -m pip wheel --quiet $INDEX --no-deps \
    --wheel-dir "$WORK/project" "$ROOT" >&2 \
    || die "could not build the dsmpacs wheel (pip's reason is above); $(offline_hint)"
PROJECT_WHEEL=$(find "$WORK/project" -name 'dsmpacs-*.whl')
[ -n "$PROJECT_WHEEL" ] || die "pip wheel made no dsmpacs wheel"

download() {
    family=$1
    case $family in
        x86_64) machine=x86_64 ;;
        armv8) machine=aarch64 ;;
    esac
    mkdir -p "$WORK/wheels-$family"
    # shellcheck disable=SC2086 # EXTRA is a list of requirements, INDEX of options
    "$PYTHON" -m pip download --quiet $INDEX --only-binary=:all: \
        --platform "manylinux2014_$machine" --platform "manylinux_2_17_$machine" \
        --python-version "$PYVER" --implementation cp --abi "$CPTAG" \
        --constraint "$CONSTRAINTS" --dest "$WORK/wheels-$family" \
        "$PROJECT_WHEEL" $EXTRA >&2 \
        || die "no wheel set for DSM $family (manylinux2014 $machine, Python $PYVER): pip's \
reason is above. Pin, in $CONSTRAINTS, a version that publishes manylinux2014 wheels; \
$(offline_hint)."
    tool wheels "$family" "$PYVER" "$WORK/wheels-$family" "$CONSTRAINTS"
}

if [ "$FILL_WHEELHOUSE" = yes ]; then
    # Both families (whichever a later build needs), and the build backend that
    # `pip wheel` of the application installs in its isolated environment.
    download x86_64 >/dev/null
    download armv8 >/dev/null
    mkdir -p "$WHEELHOUSE"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --dest "$WORK/build-backend" "setuptools>=68" wheel >&2 \
        || die "could not download the build backend (setuptools, wheel)"
    # The application's own wheel stays out: it is built from the source each time.
    find "$WORK/wheels-x86_64" "$WORK/wheels-armv8" "$WORK/build-backend" -name '*.whl' \
        ! -name 'dsmpacs-*' -exec cp {} "$WHEELHOUSE/" \;
    echo "spk_build: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels in $WHEELHOUSE" >&2
    exit 0
fi

# (Assigned first: under set -e a failed command substitution stops the script here.)
kind=$(download x86_64)
if [ "$kind" = "pure" ]; then
    mv "$WORK/wheels-x86_64" "$WORK/wheels-noarch"
    ARCHES="noarch"
else
    download armv8 >/dev/null
    ARCHES="x86_64 armv8"
fi

build_spk() {
    arch=$1
    stage="$WORK/spk-$arch"
    payload="$WORK/payload-$arch"
    mkdir -p "$stage/scripts" "$stage/conf" "$payload"

    # package.tgz: unpacked by DSM into /var/packages/dsmpacs/target.
    cp -R "$WORK/wheels-$arch" "$payload/wheels"
    tool assets "$stage" "$payload"
    tar --create --gzip --owner=0 --group=0 --numeric-owner \
        --file="$stage/package.tgz" -C "$payload" app ui wheels

    for script in "$ROOT"/dsm/scripts/*; do
        sed -e "s/@PYTHON_PACKAGE@/$PYTHON_PACKAGE/" -e "s/@PYTHON_VERSION@/$PYVER/" \
            "$script" >"$stage/scripts/$(basename "$script")"
        chmod 0755 "$stage/scripts/$(basename "$script")"
    done
    chmod 0644 "$stage/scripts/common"
    # preinst checks the wizard's answers with the application's own rules.
    cp "$ROOT/package/dsmpacs/dsm/wizard.py" "$stage/scripts/wizard.py"
    chmod 0644 "$stage/scripts/wizard.py"
    cp "$ROOT/dsm/conf/privilege" "$ROOT/dsm/conf/resource" "$stage/conf/"
    tool license "$payload/wheels" >"$stage/LICENSE"

    checksum=$(md5sum "$stage/package.tgz" | cut -d ' ' -f 1)
    # What DSM unpacks plus the environment postinst builds from it.
    extractsize=$(( $(du -sk "$payload" | cut -f 1) + $(tool envsize "$payload/wheels") ))
    tool info "version=$VERSION" "arch=$arch" \
        "install_dep_packages=$PYTHON_PACKAGE>=$PYVER" \
        "changelog=$CHANGELOG" "helpurl=$HELP_URL" "support_url=$SUPPORT_URL" \
        "maintainer_url=$MAINTAINER_URL" "distributor=$DISTRIBUTOR" \
        "distributor_url=$DISTRIBUTOR_URL" \
        "checksum=$checksum" "extractsize=$extractsize" >"$stage/INFO"

    mkdir -p "$OUT"
    spk="$OUT/dsmpacs-$arch-$VERSION.spk"
    tar --create --owner=0 --group=0 --numeric-owner --file="$spk" -C "$stage" \
        INFO package.tgz scripts conf WIZARD_UIFILES PACKAGE_ICON.PNG PACKAGE_ICON_256.PNG LICENSE
    echo "$spk"
}

for arch in $ARCHES; do
    build_spk "$arch"
done
