using System.Globalization;
using System.Net;
using System.Text;
using Gill.ML.Evaluation.Plots;

namespace Gill.ML.Evaluation.Demo;

/// <summary>Renders the demo's self-contained HTML report (charts and images inlined as base64 PNG).</summary>
internal static class DemoReport
{
    private static string H(string? text) => WebUtility.HtmlEncode(text ?? "");

    private static string F(double v) => double.IsFinite(v) ? v.ToString("0.000", CultureInfo.InvariantCulture) : "n/a";

    private static string Img(byte[]? png, string alt) => png is null
        ? "<span class=\"missing\">none</span>"
        : $"<img class=\"px\" alt=\"{H(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\"/>";

    private static byte[]? ReadPng(string? path) => path is not null && File.Exists(path) ? File.ReadAllBytes(path) : null;

    /// <summary>
    /// The report's section on <c>gill eval paper</c>: links (relative to the report) to its index, each table's Markdown, chart
    /// and JSON when a results folder is given or a <c>gill-paper</c> folder lies beside the report's folder; otherwise the
    /// command that produces them.
    /// </summary>
    internal static string PaperSection(string outputDirectory, string? paperDirectory)
    {
        string outDir = Path.GetFullPath(outputDirectory);
        string dir = Path.GetFullPath(paperDirectory ?? Path.Combine(outDir, "..", "gill-paper"));
        string index = Path.Combine(dir, Paper.PaperExperiments.IndexFileName);
        var s = new StringBuilder("<h2>The paper's experiments</h2>");
        if (!File.Exists(index))
        {
            s.Append("<p>Not run yet: <code>gill eval paper --cache CACHE --out ").Append(H(dir))
             .Append("</code> reproduces the paper's tables (stories, dialogue, retrieval, mapper, [IMG] tokens, decision, frozen LM, retrieved context) ")
             .Append("on this world; run it and then the demo again to link them here.</p>");
            return s.ToString();
        }
        string Rel(string path) => H(Path.GetRelativePath(outDir, path).Replace('\\', '/'));
        s.Append($"<p>Results of <code>gill eval paper</code> in <code>{H(dir)}</code>: <a href=\"{Rel(index)}\">index</a>.</p><ul>");
        foreach (var md in Directory.GetFiles(dir, "*.md").Where(f => Path.GetFileName(f) != Paper.PaperExperiments.IndexFileName).OrderBy(f => f, StringComparer.Ordinal))
        {
            string stem = Path.Combine(dir, Path.GetFileNameWithoutExtension(md));
            s.Append($"<li>{H(Path.GetFileNameWithoutExtension(md))}: <a href=\"{Rel(md)}\">table</a>");
            if (File.Exists(stem + ".png")) s.Append($", <a href=\"{Rel(stem + ".png")}\">chart</a>");
            if (File.Exists(stem + ".json")) s.Append($", <a href=\"{Rel(stem + ".json")}\">JSON</a>");
            s.Append("</li>");
        }
        return s.Append("</ul>").ToString();
    }

    public static string Render(DemoFigures figures, IReadOnlyList<DemoRunner.Sample> samples, DemoOptions options, string cacheDirectory, string modelPath)
    {
        var s = new StringBuilder();
        s.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"/><title>GILL on the shapes world</title><style>")
         .Append("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}")
         .Append("td,th{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}")
         .Append("img.px{width:96px;height:96px;image-rendering:pixelated;border:1px solid #888}.missing{color:#a00}")
         .Append(".better{color:#060;font-weight:bold}.worse{color:#a00;font-weight:bold}</style></head><body>");
        s.Append("<h1>GILL on the shapes world</h1>");
        s.Append($"<p>Seed {options.Seed}, {options.Steps} training steps of batch {options.BatchSize}, {(options.Quick ? "quick" : "full")} backbones " +
                 $"(cache <code>{H(cacheDirectory)}</code>, {(figures.PretrainingCached ? "reused" : "trained in this run")}). Model: <code>{H(modelPath)}</code>. " +
                 $"Machine: {H(string.Join(", ", figures.Machine.Select(kv => kv.Key + " " + kv.Value)))}.</p>");

        s.Append("<h2>Figures and their baselines (same run)</h2><table><tr><th>figure</th><th>value</th><th>baseline</th><th>baseline value</th><th>N</th><th>how</th></tr>");
        foreach (var f in figures.All)
        {
            bool lowerIsBetter = ReferenceEquals(f, figures.Loss);
            string cls = f.Value == f.Baseline ? "" : (f.Value > f.Baseline) ^ lowerIsBetter ? "better" : "worse";
            s.Append($"<tr><td>{H(f.Name)}</td><td class=\"{cls}\">{F(f.Value)}</td><td>{H(f.BaselineName)}</td><td>{F(f.Baseline)}</td><td>{f.N}</td><td>{H(f.Description)}</td></tr>");
        }
        s.Append("</table>");

        var bars = new List<PlotBar>();
        foreach (var f in figures.All.Where(f => !ReferenceEquals(f, figures.Loss) && double.IsFinite(f.Value) && double.IsFinite(f.Baseline)))
        {
            bars.Add(PlotBar.Plain(Short(f.Name), f.Value));
            bars.Add(PlotBar.Plain("baseline", f.Baseline));
        }
        if (bars.Count > 0)
            s.Append("<p>").Append(MetricPlots.ToHtmlImage(MetricPlots.BarChart(bars, new ChartOptions
            {
                Title = "GILL figures, each followed by its baseline", YLabel = "value", Width = 1000, Height = 420, YFromZero = true,
            }), "figures and baselines")).Append("</p>");

        s.Append("<h2>Training loss</h2>");
        var finite = figures.LossCurve.Where(double.IsFinite).ToArray();
        if (finite.Length >= 2 && finite.Length == figures.LossCurve.Count)
            s.Append("<p>").Append(MetricPlots.ToHtmlImage(MetricPlots.LossCurves([PlotSeries.FromValues("total joint loss", figures.LossCurve)],
                new ChartOptions { Title = "GILL joint training loss", XLabel = "step", YLabel = "loss" }), "loss curve")).Append("</p>");
        var parts = figures.LossComponents.Where(kv => kv.Value.Count >= 2 && kv.Value.All(double.IsFinite)).ToList();
        if (parts.Count > 0)
            s.Append("<p>").Append(MetricPlots.ToHtmlImage(MetricPlots.LossCurves(parts.Select(kv => PlotSeries.FromValues(kv.Key, kv.Value)).ToList(),
                new ChartOptions { Title = "Loss terms (unweighted)", XLabel = "step", YLabel = "loss" }), "loss terms")).Append("</p>");
        else
            s.Append($"<p>{figures.LossCurve.Count} loss values recorded (a curve needs at least two finite values).</p>");

        s.Append("<h2>Samples (test split)</h2><p>[IMG] is forced at the first step (scale factor ")
         .Append(DemoRunner.ForcedImageScaleFactor.ToString(CultureInfo.InvariantCulture))
         .Append("); the generated image comes from the GILLMapper and the world generator, the retrieved one from the test gallery.</p>");
        s.Append("<table><tr><th>kind</th><th>input (text and images, interleaved)</th><th>ground truth</th><th>generated</th><th>retrieved</th></tr>");
        foreach (var x in samples)
        {
            s.Append($"<tr><td>{H(x.Kind)}</td><td>");
            foreach (var (text, image) in x.Inputs)
            {
                s.Append("<div>").Append(H(text).Replace("\n", "<br/>", StringComparison.Ordinal)).Append("</div>");
                if (image is not null) s.Append(Img(ReadPng(image), "input image"));
            }
            s.Append($"</td><td>{Img(ReadPng(x.GroundTruthPath), "ground truth")}</td><td>{Img(x.Generated, "generated")}</td>")
             .Append($"<td>{Img(ReadPng(x.RetrievedPath), "retrieved")}<br/>{H(x.RetrievedId)} ({F(x.RetrievedScore)})</td></tr>");
        }
        s.Append("</table>");

        s.Append(PaperSection(options.OutputDirectory, options.PaperResultsDirectory));
        s.Append("<h2>Timing</h2><table><tr><th>phase</th><th>seconds</th></tr>");
        foreach (var (phase, sec) in figures.Seconds)
        {
            s.Append($"<tr><td>{H(phase)}</td><td>{sec.ToString("0.0", CultureInfo.InvariantCulture)}</td></tr>");
            if (phase == "pretraining")
                foreach (var (sub, subSec) in figures.PretrainingSeconds)
                    s.Append($"<tr><td>&nbsp;&nbsp;{H(sub)}</td><td>{subSec.ToString("0.0", CultureInfo.InvariantCulture)}</td></tr>");
        }
        s.Append($"<tr><td>total</td><td>{figures.Seconds.Values.Sum().ToString("0.0", CultureInfo.InvariantCulture)}</td></tr></table>");
        s.Append("</body></html>");
        return s.ToString();
    }

    private static string Short(string name) => name.Replace("GILL-generated ", "", StringComparison.Ordinal)
        .Replace("GILL text→image ", "", StringComparison.Ordinal).Split(' ')[0];
}
