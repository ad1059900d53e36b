package main

import (
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strconv"
)

// Plot geometry, in pixels.
const (
	plotW, plotH = 640, 420
	plotLeft     = 60
	plotRight    = 20
	plotTop      = 20
	plotBottom   = 50
)

var (
	plotBG    = color.RGBA{255, 255, 255, 255}
	plotAxis  = color.RGBA{40, 40, 40, 255}
	plotGrid  = color.RGBA{225, 225, 225, 255}
	plotLine  = color.RGBA{30, 100, 200, 255}
	plotPoint = color.RGBA{200, 40, 40, 255}
	plotIdeal = color.RGBA{120, 180, 120, 255}
)

// digits is a 3x5 bitmap font for tick labels: each glyph is five rows of three bits.
var digits = map[rune][5]uint8{
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {7, 1, 7, 4, 7}, '3': {7, 1, 7, 1, 7},
	'4': {5, 5, 7, 1, 1}, '5': {7, 4, 7, 1, 7}, '6': {7, 4, 7, 5, 7}, '7': {7, 1, 1, 1, 1},
	'8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 7}, '.': {0, 0, 0, 0, 2}, 's': {0, 3, 6, 1, 6},
	'N': {5, 7, 7, 7, 5}, '=': {0, 7, 0, 7, 0},
}

// writePlot draws total time (y, seconds) against N (x) as points joined by lines,
// with the linear extrapolation of the first point in green for comparison.
func writePlot(path string, rows []benchScale) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill(img, img.Bounds(), plotBG)
	maxN, maxT := 0.0, 0.0
	for _, r := range rows {
		maxN, maxT = math.Max(maxN, float64(r.N)), math.Max(maxT, r.TotalSeconds)
	}
	maxN, maxT = niceCeil(maxN), niceCeil(maxT*1.1)
	x0, y0 := plotLeft, plotH-plotBottom
	x1, y1 := plotW-plotRight, plotTop
	px := func(n float64) int { return x0 + int(n/maxN*float64(x1-x0)) }
	py := func(t float64) int { return y0 - int(t/maxT*float64(y0-y1)) }

	for i := 0; i <= 5; i++ {
		gx, gy := x0+i*(x1-x0)/5, y0-i*(y0-y1)/5
		line(img, gx, y0, gx, y1, plotGrid)
		line(img, x0, gy, x1, gy, plotGrid)
		label(img, gx-8, y0+8, strconv.FormatFloat(maxN*float64(i)/5, 'f', -1, 64), plotAxis)
		label(img, 4, gy-5, strconv.FormatFloat(maxT*float64(i)/5, 'f', 1, 64)+"s", plotAxis)
	}
	line(img, x0, y0, x1, y0, plotAxis)
	line(img, x0, y0, x0, y1, plotAxis)
	label(img, (x0+x1)/2-10, plotH-18, "N", plotAxis)

	if len(rows) > 0 && rows[0].N > 0 {
		per := rows[0].TotalSeconds / float64(rows[0].N)
		line(img, px(0), py(0), px(maxN), py(math.Min(per*maxN, maxT)), plotIdeal)
	}
	for i, r := range rows {
		x, y := px(float64(r.N)), py(r.TotalSeconds)
		if i > 0 {
			p := rows[i-1]
			line(img, px(float64(p.N)), py(p.TotalSeconds), x, y, plotLine)
		}
		fill(img, image.Rect(x-3, y-3, x+4, y+4), plotPoint)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws with Bresenham's algorithm.
func line(img *image.RGBA, xa, ya, xb, yb int, c color.RGBA) {
	dx, dy := abs(xb-xa), -abs(yb-ya)
	sx, sy := sign(xb-xa), sign(yb-ya)
	e := dx + dy
	for {
		img.SetRGBA(xa, ya, c)
		if xa == xb && ya == yb {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			xa += sx
		} else {
			e += dx
			ya += sy
		}
	}
}

// label writes text in the 3x5 font, scaled 2x.
func label(img *image.RGBA, x, y int, text string, c color.RGBA) {
	for _, ch := range text {
		g, ok := digits[ch]
		if ok {
			for row := range 5 {
				for col := range 3 {
					if g[row]&(4>>col) != 0 {
						fill(img, image.Rect(x+col*2, y+row*2, x+col*2+2, y+row*2+2), c)
					}
				}
			}
		}
		x += 8
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
