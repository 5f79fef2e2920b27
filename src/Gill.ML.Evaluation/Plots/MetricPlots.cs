using System.Globalization;
using Gill.ML.Serialization;
using SkiaSharp;

namespace Gill.ML.Evaluation.Plots;

/// <summary>One bar: a value with an error bar from <see cref="Lower"/> to <see cref="Upper"/>.</summary>
/// <param name="Label">Category label under the bar (e.g. the method).</param>
/// <param name="Value">Bar height.</param>
/// <param name="Lower">Lower end of the error bar (equal to <paramref name="Value"/> for none).</param>
/// <param name="Upper">Upper end of the error bar (equal to <paramref name="Value"/> for none).</param>
public sealed record PlotBar(string Label, double Value, double Lower, double Upper)
{
    /// <summary>A bar without an error bar.</summary>
    public static PlotBar Plain(string label, double value) => new(label, value, value, value);

    /// <summary>A bar with ± one standard deviation.</summary>
    public static PlotBar WithStd(string label, double mean, double std) => new(label, mean, mean - std, mean + std);

    /// <summary>A bar with a confidence interval (none when <paramref name="interval"/> is null).</summary>
    public static PlotBar WithInterval(string label, double value, ConfidenceInterval? interval) =>
        interval is { } ci ? new(label, value, ci.Lower, ci.Upper) : Plain(label, value);
}

/// <summary>A named line: y against x (same length).</summary>
/// <param name="Name">Legend entry.</param>
/// <param name="X">X values (e.g. dialogue rounds, training steps), increasing or not.</param>
/// <param name="Y">Y values.</param>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y)
{
    /// <summary>A series with x = 0, 1, 2, … (e.g. a loss per step).</summary>
    public static PlotSeries FromValues(string name, IReadOnlyList<double> y) =>
        new(name, Enumerable.Range(0, y?.Count ?? 0).Select(i => (double)i).ToArray(), y ?? throw new ArgumentNullException(nameof(y)));
}

/// <summary>Title, axis labels and size of a chart.</summary>
public sealed class ChartOptions
{
    /// <summary>Title drawn above the plot area.</summary>
    public string? Title { get; init; }

    /// <summary>Label of the x axis.</summary>
    public string? XLabel { get; init; }

    /// <summary>Label of the y axis.</summary>
    public string? YLabel { get; init; }

    /// <summary>A note drawn under the chart, e.g. the backbone of an embedded-default metric.</summary>
    public string? Footnote { get; init; }

    /// <summary>Width in pixels (200–4096).</summary>
    public int Width { get; init; } = 640;

    /// <summary>Height in pixels (150–4096).</summary>
    public int Height { get; init; } = 400;

    /// <summary>Start the y axis at zero when every value is positive (bar charts always include zero).</summary>
    public bool YFromZero { get; init; }

    internal void Validate()
    {
        if (Width < 200 || Width > 4096) throw new ArgumentOutOfRangeException(nameof(Width), Width, "Width must be in [200, 4096] pixels.");
        if (Height < 150 || Height > 4096) throw new ArgumentOutOfRangeException(nameof(Height), Height, "Height must be in [150, 4096] pixels.");
    }
}

/// <summary>
/// Small PNG charts for evaluation reports, drawn with SkiaSharp: a bar chart with error bars (metric ± std or
/// interval per method), a line chart of a metric against a context size (e.g. dialogue rounds) and loss curves.
/// <c>Xxx(...)</c> returns PNG bytes; <c>SaveXxx(path, ...)</c> writes them atomically.
/// </summary>
/// <remarks>Text uses the default system typeface; where the machine has no fonts the chart is drawn without text.</remarks>
public static class MetricPlots
{
    private static readonly SKColor[] Palette =
    {
        new(0x1f, 0x77, 0xb4), new(0xff, 0x7f, 0x0e), new(0x2c, 0xa0, 0x2c), new(0xd6, 0x27, 0x28),
        new(0x94, 0x67, 0xbd), new(0x8c, 0x56, 0x4b), new(0xe3, 0x77, 0xc2), new(0x7f, 0x7f, 0x7f),
    };

    /// <summary>A bar chart with error bars, as PNG bytes.</summary>
    /// <exception cref="ArgumentException">No bars, or a value or bound is not finite.</exception>
    public static byte[] BarChart(IReadOnlyList<PlotBar> bars, ChartOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(bars);
        options ??= new ChartOptions();
        options.Validate();
        if (bars.Count == 0) throw new ArgumentException("A bar chart needs at least one bar.", nameof(bars));
        for (int i = 0; i < bars.Count; i++)
        {
            var b = bars[i] ?? throw new ArgumentException($"Bar {i} is null.", nameof(bars));
            if (!double.IsFinite(b.Value) || !double.IsFinite(b.Lower) || !double.IsFinite(b.Upper))
                throw new ArgumentException($"Bar {i} ('{b.Label}') has a non-finite value or error bound ({b.Value}, [{b.Lower}, {b.Upper}]).", nameof(bars));
        }
        double lo = Math.Min(0, bars.Min(b => Math.Min(b.Value, Math.Min(b.Lower, b.Upper))));
        double hi = Math.Max(0, bars.Max(b => Math.Max(b.Value, Math.Max(b.Lower, b.Upper))));
        return Draw(options, null, (lo, hi), (canvas, area, mapY) =>
        {
            float slot = area.Width / bars.Count;
            float width = slot * 0.6f;
            using var fill = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Fill };
            using var stroke = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeWidth = 1.5f, Color = SKColors.Black };
            using var text = TextPaint(12, SKTextAlign.Center);
            for (int i = 0; i < bars.Count; i++)
            {
                var b = bars[i];
                float cx = area.Left + slot * (i + 0.5f);
                float y0 = mapY(0), yv = mapY(b.Value);
                fill.Color = Palette[i % Palette.Length];
                canvas.DrawRect(new SKRect(cx - width / 2, Math.Min(y0, yv), cx + width / 2, Math.Max(y0, yv)), fill);
                if (b.Lower != b.Value || b.Upper != b.Value)
                {
                    float yl = mapY(b.Lower), yu = mapY(b.Upper), cap = width / 4;
                    canvas.DrawLine(cx, yl, cx, yu, stroke);
                    canvas.DrawLine(cx - cap, yl, cx + cap, yl, stroke);
                    canvas.DrawLine(cx - cap, yu, cx + cap, yu, stroke);
                }
                canvas.DrawText(Fit(b.Label, text, slot - 4), cx, area.Bottom + 16, text);
            }
        });
    }

    /// <summary>A line chart of one or more series (e.g. a metric against dialogue rounds), as PNG bytes.</summary>
    /// <exception cref="ArgumentException">No series, an empty series, X and Y of different lengths, or a non-finite value.</exception>
    public static byte[] LineChart(IReadOnlyList<PlotSeries> series, ChartOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(series);
        options ??= new ChartOptions();
        options.Validate();
        if (series.Count == 0) throw new ArgumentException("A line chart needs at least one series.", nameof(series));
        for (int s = 0; s < series.Count; s++)
        {
            var p = series[s] ?? throw new ArgumentException($"Series {s} is null.", nameof(series));
            if (p.X is null || p.Y is null) throw new ArgumentException($"Series '{p.Name}' has no X or Y values.", nameof(series));
            if (p.Y.Count == 0) throw new ArgumentException($"Series '{p.Name}' is empty.", nameof(series));
            if (p.X.Count != p.Y.Count) throw new ArgumentException($"Series '{p.Name}' has {p.X.Count} X values but {p.Y.Count} Y values.", nameof(series));
            for (int i = 0; i < p.Y.Count; i++)
                if (!double.IsFinite(p.X[i]) || !double.IsFinite(p.Y[i]))
                    throw new ArgumentException($"Series '{p.Name}' has a non-finite point at index {i} ({p.X[i]}, {p.Y[i]}).", nameof(series));
        }
        double xlo = series.Min(p => p.X.Min()), xhi = series.Max(p => p.X.Max());
        double ylo = series.Min(p => p.Y.Min()), yhi = series.Max(p => p.Y.Max());
        if (options.YFromZero && ylo > 0) ylo = 0;
        return Draw(options, (xlo, xhi), (ylo, yhi), (canvas, area, mapY) =>
        {
            var (xa, xb) = Expand(xlo, xhi);
            float MapX(double x) => area.Left + (float)((x - xa) / (xb - xa)) * area.Width;
            using var line = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeWidth = 2f };
            using var dot = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Fill };
            using var legend = TextPaint(12, SKTextAlign.Left);
            for (int s = 0; s < series.Count; s++)
            {
                var p = series[s];
                line.Color = dot.Color = Palette[s % Palette.Length];
                using var path = new SKPath();
                for (int i = 0; i < p.Y.Count; i++)
                {
                    var pt = new SKPoint(MapX(p.X[i]), mapY(p.Y[i]));
                    if (i == 0) path.MoveTo(pt); else path.LineTo(pt);
                }
                canvas.DrawPath(path, line);
                if (p.Y.Count <= 50)
                    for (int i = 0; i < p.Y.Count; i++) canvas.DrawCircle(MapX(p.X[i]), mapY(p.Y[i]), 3f, dot);
            }
            using var box = new SKPaint { Style = SKPaintStyle.Fill, Color = new SKColor(255, 255, 255, 220) };
            using var frame = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeWidth = 1, Color = new SKColor(0xb0, 0xb0, 0xb0) };
            var legendBox = new SKRect(area.Right - 136, area.Top + 2, area.Right - 2, area.Top + 8 + 16 * series.Count);
            canvas.DrawRect(legendBox, box);
            canvas.DrawRect(legendBox, frame);
            for (int s = 0; s < series.Count; s++)
            {
                line.Color = Palette[s % Palette.Length];
                float ly = area.Top + 18 + 16 * s;
                canvas.DrawLine(area.Right - 130, ly - 4, area.Right - 110, ly - 4, line);
                canvas.DrawText(Fit(series[s].Name, legend, 100), area.Right - 104, ly, legend);
            }
        });
    }

    /// <summary>Loss curves (loss against step, one series per loss), as PNG bytes.</summary>
    public static byte[] LossCurves(IReadOnlyList<PlotSeries> losses, ChartOptions? options = null) =>
        LineChart(losses, options ?? new ChartOptions { Title = "Training loss", XLabel = "step", YLabel = "loss" });

    /// <summary>Writes <see cref="BarChart"/> to <paramref name="path"/> atomically.</summary>
    public static void SaveBarChart(string path, IReadOnlyList<PlotBar> bars, ChartOptions? options = null) =>
        AtomicFile.WriteAllBytes(CheckPath(path), BarChart(bars, options));

    /// <summary>Writes <see cref="LineChart"/> to <paramref name="path"/> atomically.</summary>
    public static void SaveLineChart(string path, IReadOnlyList<PlotSeries> series, ChartOptions? options = null) =>
        AtomicFile.WriteAllBytes(CheckPath(path), LineChart(series, options));

    /// <summary>Writes <see cref="LossCurves"/> to <paramref name="path"/> atomically.</summary>
    public static void SaveLossCurves(string path, IReadOnlyList<PlotSeries> losses, ChartOptions? options = null) =>
        AtomicFile.WriteAllBytes(CheckPath(path), LossCurves(losses, options));

    /// <summary>An HTML <c>&lt;img&gt;</c> element with the PNG inlined as a data URI (for notebooks and HTML reports).</summary>
    public static string ToHtmlImage(byte[] png, string? alt = null)
    {
        ArgumentNullException.ThrowIfNull(png);
        var altText = System.Net.WebUtility.HtmlEncode(alt ?? "chart");
        return $"<img alt=\"{altText}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\"/>";
    }

    private static string CheckPath(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"Charts are written as PNG; '{path}' does not end in .png.", nameof(path));
        return path;
    }

    private delegate void PlotBody(SKCanvas canvas, SKRect area, Func<double, float> mapY);

    private static byte[] Draw(ChartOptions o, (double Lo, double Hi)? x, (double Lo, double Hi) y, PlotBody body)
    {
        var info = new SKImageInfo(o.Width, o.Height, SKColorType.Rgba8888, SKAlphaType.Premul);
        using var surface = SKSurface.Create(info) ?? throw new InvalidOperationException($"SkiaSharp could not create a {o.Width}×{o.Height} surface.");
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        float top = o.Title is null ? 16 : 36, bottom = 44 + (o.Footnote is null ? 0 : 16), left = 70, right = 16;
        var area = new SKRect(left, top, o.Width - right, o.Height - bottom);
        var (ya, yb) = Expand(y.Lo, y.Hi);
        float MapY(double v) => area.Bottom - (float)((v - ya) / (yb - ya)) * area.Height;

        using var grid = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeWidth = 1, Color = new SKColor(0xe0, 0xe0, 0xe0) };
        using var axis = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeWidth = 1.5f, Color = SKColors.Black };
        using var tick = TextPaint(11, SKTextAlign.Right);
        foreach (var t in Ticks(ya, yb))
        {
            float py = MapY(t);
            canvas.DrawLine(area.Left, py, area.Right, py, grid);
            canvas.DrawText(FormatTick(t), area.Left - 6, py + 4, tick);
        }
        if (x is { } xr)
        {
            var (xa, xb) = Expand(xr.Lo, xr.Hi);
            using var xtick = TextPaint(11, SKTextAlign.Center);
            foreach (var t in Ticks(xa, xb))
            {
                float px = area.Left + (float)((t - xa) / (xb - xa)) * area.Width;
                canvas.DrawLine(px, area.Top, px, area.Bottom, grid);
                canvas.DrawText(FormatTick(t), px, area.Bottom + 16, xtick);
            }
        }
        body(canvas, area, MapY);
        canvas.DrawLine(area.Left, area.Top, area.Left, area.Bottom, axis);
        canvas.DrawLine(area.Left, area.Bottom, area.Right, area.Bottom, axis);
        if (o.Title is { } title)
        {
            using var p = TextPaint(16, SKTextAlign.Center);
            canvas.DrawText(Fit(title, p, o.Width - 8), o.Width / 2f, 24, p);
        }
        if (o.XLabel is { } xl)
        {
            using var p = TextPaint(12, SKTextAlign.Center);
            canvas.DrawText(Fit(xl, p, area.Width), area.MidX, area.Bottom + 34, p);
        }
        if (o.YLabel is { } yl)
        {
            using var p = TextPaint(12, SKTextAlign.Center);
            canvas.Save();
            canvas.RotateDegrees(-90, 16, area.MidY);
            canvas.DrawText(Fit(yl, p, area.Height), 16, area.MidY + 4, p);
            canvas.Restore();
        }
        if (o.Footnote is { } note)
        {
            using var p = TextPaint(10, SKTextAlign.Left);
            p.Color = new SKColor(0x55, 0x55, 0x55);
            canvas.DrawText(Fit(note, p, o.Width - 12), 6, o.Height - 6, p);
        }
        canvas.Flush();
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new InvalidOperationException("SkiaSharp could not encode the chart as PNG.");
        return data.ToArray();
    }

    private static SKPaint TextPaint(float size, SKTextAlign align) =>
        new() { IsAntialias = true, Color = SKColors.Black, TextSize = size, TextAlign = align, Typeface = SKTypeface.Default };

    private static string Fit(string text, SKPaint paint, float maxWidth)
    {
        if (string.IsNullOrEmpty(text) || paint.MeasureText(text) <= maxWidth) return text ?? "";
        for (int n = text.Length - 1; n > 0; n--)
        {
            var s = text[..n] + "…";
            if (paint.MeasureText(s) <= maxWidth) return s;
        }
        return "";
    }

    /// <summary>The axis range: padded by 5% each side, or ±0.5 (±5% of the value) when all values are equal.</summary>
    internal static (double Lo, double Hi) Expand(double lo, double hi)
    {
        if (hi - lo <= 1e-12 * Math.Max(1, Math.Abs(hi)))
        {
            double pad = lo == 0 ? 0.5 : Math.Abs(lo) * 0.05;
            return (lo - pad, hi + pad);
        }
        double m = (hi - lo) * 0.05;
        return (lo == 0 ? 0 : lo - m, hi + m);
    }

    /// <summary>"Nice" tick values (1, 2 or 5 × 10ⁿ steps) inside [lo, hi].</summary>
    internal static IReadOnlyList<double> Ticks(double lo, double hi, int target = 6)
    {
        double raw = (hi - lo) / target;
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double f = raw / mag;
        double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
        var ticks = new List<double>();
        for (double t = Math.Ceiling(lo / step) * step; t <= hi + step * 1e-9; t += step)
            ticks.Add(Math.Abs(t) < step * 1e-9 ? 0 : t);
        return ticks;
    }

    private static string FormatTick(double v) =>
        Math.Abs(v) >= 1e4 || (v != 0 && Math.Abs(v) < 1e-3) ? v.ToString("0.##E+0", CultureInfo.InvariantCulture) : v.ToString("G4", CultureInfo.InvariantCulture);
}
