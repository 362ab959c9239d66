package version

import (
	"os"
	"strconv"
	"time"
)

// BuildDate is the time packages and man pages are stamped with:
// SOURCE_DATE_EPOCH when set (reproducible builds), else now.
func BuildDate() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Now().UTC()
}
