"""Sandbox trees for the benchmark. Every state exists twice, byte for byte the same: one root
rdkms reaches through --root/RDKMS_ROOT, and one that is bind-mounted over /var/lib/dkms,
/lib/modules and /etc/dkms inside the harness's private mount namespace, so that Debian's dkms
and its unmodified kernel hooks (which know only the system paths) work on it. States are
written directly in the layout dkms 3.0.10 writes (checked by comparing both tools' status
output on them), so that 1000 registered modules take seconds instead of hours."""

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ARCH = os.uname().machine

# System paths Debian's dkms is pointed at by mounting the sandbox over them; its source tree
# comes from the sandbox's /etc/dkms/framework.conf (source_tree=...).
MOUNTED = ("var/lib/dkms", "lib/modules", "etc/dkms")


@dataclass
class Ko:
    """One module file of a package for one kernel."""

    built_name: str
    dest_name: str
    location: str  # under /lib/modules/K, e.g. /updates/dkms


@dataclass
class Package:
    """A dkms package: real sources to copy, or a synthetic dkms.conf."""

    name: str
    version: str
    source: Path | None = None
    kos: dict = field(default_factory=dict)  # kernel -> [Ko]
    autoinstall: bool = True

    @property
    def dirname(self):
        return f"{self.name}-{self.version}"


def synthetic(index, kernels):
    """A registered module of one .ko with a literal dkms.conf."""
    name = f"bench{index:04d}"
    kos = {k: [Ko(name, name, "/updates/dkms")] for k in kernels}
    return Package(name, "1.0", None, kos)


def synthetic_conf(p):
    return (
        f'PACKAGE_NAME="{p.name}"\nPACKAGE_VERSION="{p.version}"\n'
        f'BUILT_MODULE_NAME[0]="{p.name}"\nDEST_MODULE_LOCATION[0]="/updates/dkms"\n'
        'MAKE[0]="make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build modules"\n'
        'CLEAN="make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build clean"\n'
        'AUTOINSTALL="yes"\n'
    )


def real(rdkms, source, kernels, scratch_root):
    """A real package: its module files per kernel as `rdkms conf show --json` evaluates them
    (kernels its BUILD_EXCLUSIVE rules out get none). None when the conf cannot be read."""
    pkg = None
    for k in kernels:
        out = subprocess.run(
            [rdkms, "conf", "show", str(source), "-k", k, "--json", "--root", str(scratch_root)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return None
        d = json.loads(out.stdout)["model"]
        if pkg is None:
            pkg = Package(d["package_name"], d["package_version"], Path(source))
            pkg.autoinstall = bool(d["autoinstall"])
        if d.get("excluded"):
            continue
        pkg.kos[k] = [
            Ko(m["built_name"], m["dest_name"], m["install_location"]) for m in d["modules"]
        ]
    return pkg


class Root:
    """One sandbox root: usr/src, var/lib/dkms, lib/modules/K/build (-> real headers),
    boot/vmlinuz-K (so rdkms counts K as installed), etc/dkms/framework.conf."""

    def __init__(self, path, kernels, headers):
        self.path = Path(path)
        self.kernels = list(kernels)
        self.headers = headers

    @property
    def tree(self):
        return self.path / "var/lib/dkms"

    @property
    def src(self):
        return self.path / "usr/src"

    def modules_dir(self, k):
        return self.path / "lib/modules" / k

    def create(self, mok_dir=None):
        for d in ("var/lib/dkms", "usr/src", "etc/dkms/framework.conf.d", "boot"):
            (self.path / d).mkdir(parents=True, exist_ok=True)
        (self.path / "etc/dkms/framework.conf").write_text(f"source_tree={self.src}\n")
        for k in self.kernels:
            self.add_kernel(k)
        if mok_dir:
            for f in ("mok.key", "mok.pub"):
                shutil.copy2(Path(mok_dir) / f, self.tree / f)
        return self

    def add_kernel(self, k):
        self.modules_dir(k).mkdir(parents=True, exist_ok=True)
        build = self.modules_dir(k) / "build"
        if not build.is_symlink():
            build.symlink_to(self.headers)
        (self.path / "boot" / f"vmlinuz-{k}").touch()

    def add_image(self, k, template_ko):
        """K's own modules as its image package leaves them after depmod: one stand-in module
        under kernel/, stored as the kernel stores them, listed in modules.dep. DKMS 3.2.2 takes
        the compression from the kernel's module files (rdkms from modules.dep, or the kernel
        config without one); a tree without any builds plain .ko with dkms and .ko.xz with
        rdkms, which no real Debian 13 kernel with its image installed would."""
        ext = "".join(Path(template_ko).suffixes)
        rel = Path("kernel/drivers/bench") / f"bench_standin{ext}"
        (self.modules_dir(k) / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_ko, self.modules_dir(k) / rel)
        with open(self.modules_dir(k) / "modules.dep", "a") as dep:
            dep.write(f"{rel}:\n")

    def write(self, pkg, installed_on, template_ko):
        """Registers pkg (source copied or synthesised, `source` link) and, for every kernel in
        installed_on, puts its built files in the tree, marks it installed and copies them to
        lib/modules/K/LOCATION, as `dkms install` leaves them."""
        src = self.src / pkg.dirname
        if pkg.source:
            if not src.exists():
                shutil.copytree(pkg.source, src, symlinks=True)
        else:
            src.mkdir(parents=True, exist_ok=True)
            (src / "dkms.conf").write_text(synthetic_conf(pkg))
        vdir = self.tree / pkg.name / pkg.version
        vdir.mkdir(parents=True, exist_ok=True)
        if not (vdir / "source").is_symlink():
            (vdir / "source").symlink_to(src)
        for k in installed_on:
            kos = pkg.kos.get(k)
            if not kos:
                continue
            kdir = vdir / k / ARCH
            (kdir / "module").mkdir(parents=True, exist_ok=True)
            (kdir / "log").mkdir(exist_ok=True)
            (kdir / "log/make.log").write_text(f"DKMS make.log for {pkg.dirname} for kernel {k} ({ARCH})\n")
            ext = "".join(Path(template_ko).suffixes)  # .ko, or .ko.xz where the kernel compresses
            for ko in kos:
                shutil.copyfile(template_ko, kdir / "module" / f"{ko.built_name}{ext}")
                dest = self.modules_dir(k) / ko.location.lstrip("/")
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template_ko, dest / f"{ko.dest_name}{ext}")
                # As depmod lists it: both tools' status take the kernel's compression from
                # modules.dep, which a kernel with its image installed has.
                with open(self.modules_dir(k) / "modules.dep", "a") as dep:
                    rel = (dest / f"{ko.dest_name}{ext}").relative_to(self.modules_dir(k))
                    dep.write(f"{rel}:\n")
            link = self.tree / pkg.name / f"kernel-{k}-{ARCH}"
            if not link.is_symlink():
                link.symlink_to(f"{pkg.version}/{k}/{ARCH}")

    def installed_files(self, k):
        """Module files under lib/modules/K/updates, relative, sorted (what an install left)."""
        base = self.modules_dir(k)
        return sorted(
            str(p.relative_to(base)) for p in (base / "updates").rglob("*.ko*") if p.is_file()
        ) if (base / "updates").is_dir() else []

    def copy_to(self, dest):
        """A copy of this root at dest (replacing what is there)."""
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        subprocess.run(["cp", "-a", str(self.path), str(dest)], check=True)
        r = Root(dest, self.kernels, self.headers)
        (r.path / "etc/dkms/framework.conf").write_text(f"source_tree={r.src}\n")
        # Source links are absolute: point them at the copy's own sources.
        for link in r.tree.glob("*/*/source"):
            target = Path(os.readlink(link))
            if target.is_relative_to(self.path):
                link.unlink()
                link.symlink_to(r.path / target.relative_to(self.path))
        return r


def private_namespace():
    """True when this process's mount namespace differs from the one bench/run started in
    (it records that one in RDKMS_BENCH_HOST_NS before `unshare --mount`)."""
    host = os.environ.get("RDKMS_BENCH_HOST_NS")
    return bool(host) and os.readlink("/proc/self/ns/mnt") != host


class Mounts:
    """The dkms side: which root is mounted over the system paths right now."""

    def __init__(self):
        self.current = None
        if not private_namespace():
            raise SystemExit(
                "bench: not in a private mount namespace; start the benchmark with bench/run"
            )
        # Nothing mounted here may leak to the host, even if the caller forgot --propagation.
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)

    def show(self, root):
        """Mounts root over the system paths (no-op if it already is)."""
        if self.current is not None and self.current.path == root.path:
            return
        self.hide()
        for rel in MOUNTED:
            subprocess.run(["mount", "--bind", str(root.path / rel), "/" + rel], check=True)
        self.current = root

    def hide(self):
        if self.current is None:
            return
        for rel in reversed(MOUNTED):
            # A process of the last run may still be leaving the tree (seen with dkms 3.2.2's
            # postinst hook on a loaded machine): wait a little, then detach it lazily.
            for _ in range(20):
                if subprocess.run(["umount", "/" + rel], stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(0.25)
            else:
                subprocess.run(["umount", "-l", "/" + rel], check=True)
        self.current = None
