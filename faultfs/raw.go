package faultfs

import "github.com/hanwen/go-fuse/v2/fuse"

// faultRaw wraps go-fuse's loopback filesystem, overriding every request
// method of fuse.RawFileSystem (v2.12) so that each first goes through the
// fault injector.
type faultRaw struct {
	fuse.RawFileSystem
	f *FS
}

func (r *faultRaw) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (status fuse.Status) {
	if st := r.f.inject("Lookup", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Lookup(cancel, header, name, out)
}

func (r *faultRaw) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	if st := r.f.inject("GetAttr", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.GetAttr(cancel, input, out)
}

func (r *faultRaw) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	if st := r.f.inject("SetAttr", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.SetAttr(cancel, input, out)
}

func (r *faultRaw) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	if st := r.f.inject("Mknod", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Mknod(cancel, input, name, out)
}

func (r *faultRaw) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	if st := r.f.inject("Mkdir", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (r *faultRaw) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	if st := r.f.inject("Unlink", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Unlink(cancel, header, name)
}

func (r *faultRaw) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	if st := r.f.inject("Rmdir", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Rmdir(cancel, header, name)
}

func (r *faultRaw) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) (code fuse.Status) {
	if st := r.f.inject("Rename", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (r *faultRaw) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) (code fuse.Status) {
	if st := r.f.inject("Link", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Link(cancel, input, filename, out)
}

func (r *faultRaw) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) (code fuse.Status) {
	if st := r.f.inject("Symlink", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (r *faultRaw) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, code fuse.Status) {
	if st := r.f.inject("Readlink", cancel); !st.Ok() {
		return out, st
	}
	return r.RawFileSystem.Readlink(cancel, header)
}

func (r *faultRaw) Access(cancel <-chan struct{}, input *fuse.AccessIn) (code fuse.Status) {
	if st := r.f.inject("Access", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Access(cancel, input)
}

func (r *faultRaw) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, code fuse.Status) {
	if st := r.f.inject("GetXAttr", cancel); !st.Ok() {
		return sz, st
	}
	return r.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (r *faultRaw) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (sz uint32, code fuse.Status) {
	if st := r.f.inject("ListXAttr", cancel); !st.Ok() {
		return sz, st
	}
	return r.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (r *faultRaw) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) (code fuse.Status) {
	if st := r.f.inject("SetXAttr", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (r *faultRaw) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (code fuse.Status) {
	if st := r.f.inject("RemoveXAttr", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (r *faultRaw) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) (code fuse.Status) {
	if st := r.f.inject("Create", cancel); !st.Ok() {
		return st
	}
	st := r.RawFileSystem.Create(cancel, input, name, out)
	noPassthrough(&out.OpenOut)
	return st
}

func (r *faultRaw) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) (code fuse.Status) {
	if st := r.f.inject("Tmpfile", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Tmpfile(cancel, input, out)
}

func (r *faultRaw) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	if st := r.f.inject("Open", cancel); !st.Ok() {
		return st
	}
	st := r.RawFileSystem.Open(cancel, input, out)
	noPassthrough(out)
	return st
}

func (r *faultRaw) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) (code fuse.Status) {
	if st := r.f.inject("Lseek", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Lseek(cancel, in, out)
}

func (r *faultRaw) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) (code fuse.Status) {
	if st := r.f.inject("GetLk", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.GetLk(cancel, input, out)
}

func (r *faultRaw) SetLk(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	if st := r.f.inject("SetLk", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.SetLk(cancel, input)
}

func (r *faultRaw) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	if st := r.f.inject("SetLkw", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.SetLkw(cancel, input)
}

func (r *faultRaw) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (written uint32, code fuse.Status) {
	if st := r.f.inject("Write", cancel); !st.Ok() {
		return written, st
	}
	return r.RawFileSystem.Write(cancel, input, data)
}

func (r *faultRaw) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (written uint32, code fuse.Status) {
	if st := r.f.inject("Writev", cancel); !st.Ok() {
		return written, st
	}
	return r.RawFileSystem.Writev(cancel, input, data)
}

func (r *faultRaw) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (written uint32, code fuse.Status) {
	if st := r.f.inject("CopyFileRange", cancel); !st.Ok() {
		return written, st
	}
	return r.RawFileSystem.CopyFileRange(cancel, input)
}

func (r *faultRaw) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) (code fuse.Status) {
	if st := r.f.inject("Ioctl", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
}

func (r *faultRaw) Flush(cancel <-chan struct{}, input *fuse.FlushIn) (code fuse.Status) {
	if st := r.f.inject("Flush", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Flush(cancel, input)
}

func (r *faultRaw) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	if st := r.f.inject("Fsync", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Fsync(cancel, input)
}

func (r *faultRaw) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) (code fuse.Status) {
	if st := r.f.inject("Fallocate", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Fallocate(cancel, input)
}

func (r *faultRaw) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	if st := r.f.inject("OpenDir", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.OpenDir(cancel, input, out)
}

func (r *faultRaw) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) (code fuse.Status) {
	if st := r.f.inject("ReadDir", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.ReadDir(cancel, input, out)
}

func (r *faultRaw) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) (code fuse.Status) {
	if st := r.f.inject("ReadDirPlus", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (r *faultRaw) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	if st := r.f.inject("FsyncDir", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.FsyncDir(cancel, input)
}

func (r *faultRaw) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) (code fuse.Status) {
	if st := r.f.inject("StatFs", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.StatFs(cancel, input, out)
}

func (r *faultRaw) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) (code fuse.Status) {
	if st := r.f.inject("Statx", cancel); !st.Ok() {
		return st
	}
	return r.RawFileSystem.Statx(cancel, input, out)
}

// noPassthrough keeps reads and writes in the daemon: with FUSE
// passthrough (kernel 6.9+) go-fuse's loopback lets the kernel use the
// backing file directly, and no fault would reach them.
func noPassthrough(out *fuse.OpenOut) {
	out.OpenFlags &^= fuse.FOPEN_PASSTHROUGH
	out.BackingID = 0
}

func (r *faultRaw) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if st := r.f.inject("Read", cancel); !st.Ok() {
		return nil, st
	}
	res, st := r.RawFileSystem.Read(cancel, input, buf)
	if !st.Ok() || !r.f.corrupt() {
		return res, st
	}
	b, st := res.Bytes(buf)
	if !st.Ok() {
		return nil, st
	}
	bad := make([]byte, len(b))
	for i, c := range b {
		bad[i] = ^c
	}
	return fuse.ReadResultData(bad), fuse.OK
}

func (r *faultRaw) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	r.f.inject("Release", cancel)
	r.RawFileSystem.Release(cancel, input)
}

var knownOps = map[string]bool{"Access": true, "CopyFileRange": true, "Create": true, "Fallocate": true, "Flush": true, "Fsync": true, "FsyncDir": true, "GetAttr": true, "GetLk": true, "GetXAttr": true, "Ioctl": true, "Link": true, "ListXAttr": true, "Lookup": true, "Lseek": true, "Mkdir": true, "Mknod": true, "Open": true, "OpenDir": true, "Read": true, "ReadDir": true, "ReadDirPlus": true, "Readlink": true, "Release": true, "RemoveXAttr": true, "Rename": true, "Rmdir": true, "SetAttr": true, "SetLk": true, "SetLkw": true, "SetXAttr": true, "StatFs": true, "Statx": true, "Symlink": true, "Tmpfile": true, "Unlink": true, "Write": true, "Writev": true}
