// A Go web app whose one dependency is vendored, so no module proxy is needed.
package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime"

	"example.com/greet"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s (DYNO=%s)\n", greet.Hello("Go"), runtime.Version(), os.Getenv("DYNO"))
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
