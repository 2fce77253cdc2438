package paddock

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Duration is a duration as the API writes it (`10s`, `500ms`, `2m`, `1.5h`, `0`). It is
// sent as whole milliseconds, rounded up (so a positive duration never becomes 0).
type Duration time.Duration

// String is the API's form: whole milliseconds.
func (d Duration) String() string {
	if d <= 0 {
		return "0"
	}
	ms := int64(math.Ceil(float64(d) / float64(time.Millisecond)))
	return strconv.FormatInt(ms, 10) + "ms"
}

// MarshalJSON writes the API's form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads the API's form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration reads the API's duration syntax: a decimal number, then `ms`, `s`, `m`
// or `min`, `h`, or no unit for seconds.
func ParseDuration(s string) (Duration, error) {
	num, unit := s, time.Second
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"ms", time.Millisecond}, {"min", time.Minute}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}} {
		if strings.HasSuffix(s, u.suffix) {
			num, unit = strings.TrimSuffix(s, u.suffix), u.unit
			break
		}
	}
	if num == "" || strings.Trim(num, "0123456789.") != "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("paddock: %q is not a duration (a decimal number and ms, s, m, min or h)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("paddock: %q is not a duration: %v", s, err)
	}
	return Duration(f * float64(unit)), nil
}

// jsonNames is the set of JSON member names of a struct value or type (embedded
// structs' fields included, `-` excluded).
func jsonNames(v interface{}) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	out := map[string]bool{}
	collectJSONNames(t, out)
	return out
}

func collectJSONNames(t reflect.Type, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name := strings.Split(tag, ",")[0]
		if f.Anonymous && tag == "" {
			ft := f.Type
			if ft.Kind() == reflect.Ptr {
				ft = ft.Elem()
			}
			collectJSONNames(ft, out)
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
}
