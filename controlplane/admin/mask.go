package admin

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// maskRules says which paths of a resource an update may name.
type maskRules struct {
	// outputOnly paths (a top-level field, or a nested path such as "oauth.generation") are set
	// by the server; naming them is an error.
	outputOnly []string
}

// applyMask copies the fields named by mask from patch into dst (same type) and returns the
// normalised paths. Paths are proto field names nested with dots (JSON names are accepted too);
// a field unset in patch is cleared in dst. Lists and maps are replaced whole. Over REST the
// gateway fills the mask with the fields present in the body.
func applyMask(dst, patch proto.Message, mask *fieldmaskpb.FieldMask, rules maskRules) ([]string, error) {
	paths := mask.GetPaths()
	if len(paths) == 0 {
		return nil, invalid("update_mask", "no fields to update")
	}
	var c checker
	var norm []string
	for _, p := range paths {
		np, err := normalisePath(dst.ProtoReflect().Descriptor(), p)
		if err != nil {
			c.add("update_mask", "%v", err)
			continue
		}
		for _, oo := range rules.outputOnly {
			if np == oo || strings.HasPrefix(np, oo+".") {
				c.add(np, "output only, cannot be updated")
			}
		}
		norm = append(norm, np)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	for _, p := range norm {
		copyPath(dst.ProtoReflect(), patch.ProtoReflect(), strings.Split(p, "."))
	}
	return norm, nil
}

// normalisePath checks that every segment names a field (descending only into singular messages)
// and returns the path in proto names.
func normalisePath(md protoreflect.MessageDescriptor, path string) (string, error) {
	segs := strings.Split(path, ".")
	out := make([]string, len(segs))
	for i, s := range segs {
		if md == nil {
			return "", fmt.Errorf("%q: %q is not a message field", path, strings.Join(segs[:i], "."))
		}
		fd := md.Fields().ByName(protoreflect.Name(s))
		if fd == nil {
			fd = md.Fields().ByJSONName(s)
		}
		if fd == nil {
			return "", fmt.Errorf("unknown field %q", path)
		}
		out[i] = string(fd.Name())
		md = nil
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
			md = fd.Message()
		}
	}
	return strings.Join(out, "."), nil
}

// copyPath copies one normalised path from src to dst.
func copyPath(dst, src protoreflect.Message, segs []string) {
	fd := dst.Descriptor().Fields().ByName(protoreflect.Name(segs[0]))
	if len(segs) == 1 {
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
		return
	}
	copyPath(dst.Mutable(fd).Message(), src.Get(fd).Message(), segs[1:])
}

// masked reports whether any path is field or inside it.
func masked(paths []string, field string) bool {
	for _, p := range paths {
		if p == field || strings.HasPrefix(p, field+".") {
			return true
		}
	}
	return false
}
