package pilot

import (
	"fmt"
	"reflect"
	"sort"

	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/config"
)

// Change is what applying a new set of Istio resources did.
type Change struct {
	Created []string `json:"created,omitempty"`
	Updated []string `json:"updated,omitempty"`
	Deleted []string `json:"deleted,omitempty"`
}

// Empty reports a change that changed nothing.
func (c Change) Empty() bool {
	return len(c.Created)+len(c.Updated)+len(c.Deleted) == 0
}

func configKey(c config.Config) string {
	return fmt.Sprintf("%s/%s.%s", c.GroupVersionKind.Kind, c.Name, c.Namespace)
}

// Apply makes the Istio resources in the store exactly `configs`, as
// `kubectl apply --prune` would on the resources of one install: new ones
// are created, changed ones updated, missing ones deleted. `current` is what
// the previous Apply (or Start) put there.
func (s *Server) Apply(current, configs []config.Config) (Change, error) {
	var change Change
	store := s.Store()
	before := map[string]config.Config{}
	for _, c := range current {
		before[configKey(c)] = c
	}
	after := map[string]bool{}
	for _, c := range configs {
		key := configKey(c)
		after[key] = true
		old, existed := before[key]
		switch {
		case !existed:
			// The store's copy is Istio's to change; `configs` stays ours.
			if _, err := store.Create(c.DeepCopy()); err != nil {
				return change, fmt.Errorf("create %s: %w", key, err)
			}
			change.Created = append(change.Created, key)
		case !sameContent(old, c):
			update := c.DeepCopy()
			update.ResourceVersion = ""
			if _, err := store.Update(update); err != nil {
				return change, fmt.Errorf("update %s: %w", key, err)
			}
			change.Updated = append(change.Updated, key)
		}
	}
	for key, old := range before {
		if after[key] {
			continue
		}
		if err := store.Delete(old.GroupVersionKind, old.Name, old.Namespace, nil); err != nil {
			return change, fmt.Errorf("delete %s: %w", key, err)
		}
		change.Deleted = append(change.Deleted, key)
	}
	sort.Strings(change.Created)
	sort.Strings(change.Updated)
	sort.Strings(change.Deleted)
	return change, nil
}

func sameContent(a, b config.Config) bool {
	pa, okA := a.Spec.(proto.Message)
	pb, okB := b.Spec.(proto.Message)
	sameSpec := okA && okB && proto.Equal(pa, pb)
	return sameSpec &&
		reflect.DeepEqual(a.Labels, b.Labels) &&
		reflect.DeepEqual(a.Annotations, b.Annotations)
}
