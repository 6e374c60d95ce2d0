"""Output files written whole or not at all: checkpoints, metrics, plots.

Each is written to a unique temporary file in the destination's own folder (so that the final
rename stays on one file system), flushed and fsync'ed, then renamed over the destination and the
folder fsync'ed: a crash, a full disk or a signal at any moment leaves either the old file or the
new one under the real name, never half of one. check_output_path() tries this in advance, so a
path that cannot be written fails before a long run rather than after it."""
import os


def _mkstemp(**where):
    # tempfile is imported only by a run that writes a file: with shutil, bz2 and lzma it is a
    # fifth of the package's import memory
    import tempfile
    return tempfile.mkstemp(**where)


class OutputPathError(ValueError):
    """An output path that cannot be written, with a message fit for one line."""


def _folder(path):
    return os.path.dirname(_target(path))


def _target(path):
    """The file a path names: through symbolic links, so that writing a link replaces the file
    it points to, and leaves the link a link."""
    target = os.path.realpath(path)
    if os.path.islink(target):  # realpath stops at a loop of links
        raise OutputPathError(f"{os.fspath(path)}: a loop of symbolic links")
    return target


def same_file(a, b):
    """Whether two paths name one file (through links, hard ones included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return _target(a) == _target(b)


def _writable_target(path, name):
    """The file an output path names (_target), or OutputPathError where it is no file to write:
    an empty path, one ending with a separator, a folder, a device or a pipe (never replaced)."""
    path = os.fspath(path)
    if not path:
        raise OutputPathError(f"{name}: the path is empty")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise OutputPathError(f"{name} {path} ends with {path[-1]}: it names a folder, not a file")
    target = _target(path)
    if os.path.isdir(target):
        raise OutputPathError(f"{name} {path} is a directory, not a file")
    if os.path.exists(target) and not os.path.isfile(target):
        raise OutputPathError(f"{name} {path} exists and is not a regular file")
    return target


def check_output_path(path, flag):
    """Refuse now a path that could not be written later: a folder, a missing or read-only
    folder, a device. Creating (and removing) a temporary file is the honest test: permission
    bits say nothing for root, and nothing about read-only mounts."""
    path = os.fspath(path)
    folder = _folder(_writable_target(path, flag))
    if not os.path.isdir(folder):
        raise OutputPathError(f"{flag} {path}: the folder {folder} does not exist")
    try:
        fd, tmp = _mkstemp(dir=folder, prefix=".microgpt-check-")
    except OSError as e:
        raise OutputPathError(f"{flag} {path}: cannot write in {folder} ({e.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def check_outputs(outputs, inputs=None, may_share=()):
    """check_output_path() for each output ({name on the command line: path or None}), and
    refuse two that name one file, or one that names an input's file ({name: path or None}):
    one would overwrite the other. may_share: (output, input) name pairs that may."""
    given = [(name, path) for name, path in outputs.items() if path]
    for name, path in given:
        check_output_path(path, name)
    read = [(name, path) for name, path in (inputs or {}).items() if path]
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1:] + read:
            if (name, other) not in may_share and same_file(path, other_path):
                raise OutputPathError(f"{name} and {other} name the same file {path}: one would overwrite the other")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_pending = set()  # AtomicFiles neither committed nor discarded yet


def discard_pending():
    """Remove every temporary file not committed yet (before an immediate exit)."""
    for f in list(_pending):
        f.discard()


class AtomicFile:
    """A text file that appears under `path` only when commit() is called; discard() (or
    garbage) removes the temporary file. Usable as a context manager that commits on success."""

    def __init__(self, path, mode="w"):
        self.path = _writable_target(path, "output")
        fd, self.tmp = _mkstemp(dir=_folder(self.path), prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        os.chmod(self.tmp, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        self.file = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        self.failed = False  # a write failed: what the file holds is not what was written
        _pending.add(self)

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as e:  # a full disk, a file size limit
            self.failed = True
            self._name_in(e)
            raise

    def commit(self):
        """Put the file under its name; after a failed write, discard it instead (the file under
        the name, if any, stays as it was)."""
        if self.file is None:
            return
        if self.failed:
            self.discard()
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            os.replace(self.tmp, self.path)
            _pending.discard(self)
        except BaseException as e:
            self._name_in(e)
            self.discard()
            raise
        _fsync_folder(_folder(self.path))

    def _name_in(self, e):
        """Name this file in an OSError that names none (a failed write or flush)."""
        if isinstance(e, OSError) and e.filename is None:
            e.filename = self.path

    def discard(self):
        """Remove the temporary file (never raises: it runs when something else already failed)."""
        _pending.discard(self)
        if self.file is not None:
            try:
                self.file.close()   # flushing what is left may fail too (a full disk)
            except OSError:
                pass
            self.file = None
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _fsync_folder(folder):
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path, data):
    with AtomicFile(path, "wb") as f:
        f.write(data)
