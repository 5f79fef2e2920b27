using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Evaluation.Plots;
using Gill.ML.Serialization;

namespace Gill.ML.Evaluation.Paper;

/// <summary>Mean and sample standard deviation of one figure over the seeds.</summary>
/// <param name="Mean">Mean over the seeds.</param>
/// <param name="Std">Sample standard deviation (n − 1 in the denominator; 0 for a single seed).</param>
/// <param name="Values">The value of each seed, in seed order.</param>
public sealed record PaperCell(
    [property: JsonPropertyName("mean")] double Mean,
    [property: JsonPropertyName("std")] double Std,
    [property: JsonPropertyName("values")] IReadOnlyList<double> Values)
{
    /// <summary>Number of seeds.</summary>
    [JsonPropertyName("n")] public int N => Values.Count;

    /// <summary>Mean ± std of <paramref name="values"/>.</summary>
    /// <exception cref="ArgumentException">No values.</exception>
    public static PaperCell Of(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0) throw new ArgumentException("A cell needs at least one value (one per seed).", nameof(values));
        double mean = values.Average();
        double std = values.Count < 2 ? 0 : Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
        return new PaperCell(mean, std, values.ToArray());
    }

    /// <summary>"0.612 ± 0.011" with <paramref name="digits"/> decimals ("n/a" when the mean is not finite; no ± for one seed).</summary>
    public string Format(int digits = 3)
    {
        if (!double.IsFinite(Mean)) return "n/a";
        string f = "F" + digits.ToString(CultureInfo.InvariantCulture);
        string m = Mean.ToString(f, CultureInfo.InvariantCulture);
        return N < 2 || !double.IsFinite(Std) ? m : m + " ± " + Std.ToString(f, CultureInfo.InvariantCulture);
    }
}

/// <summary>One row of a <see cref="PaperTable"/>: a method or setting and its cells by column.</summary>
/// <param name="Label">The row label (method, setting).</param>
/// <param name="Cells">Cells by column name; a column a row has no value for is absent (shown as "–").</param>
public sealed record PaperRow(
    [property: JsonPropertyName("label")] string Label,
    [property: JsonPropertyName("cells")] IReadOnlyDictionary<string, PaperCell> Cells);

/// <summary>How <see cref="PaperTable.SaveChart"/> draws a table.</summary>
public enum PaperChartKind
{
    /// <summary>One bar (mean ± std) per row and charted column.</summary>
    Bars,

    /// <summary>One line per row across the charted columns (x = 1, 2, … or the numbers the columns end with).</summary>
    Lines,

    /// <summary>One line per charted column down the rows (x = the number each row label ends with, else 1, 2, …).</summary>
    LinesByRow,
}

/// <summary>
/// One experiment's table: rows × columns of <see cref="PaperCell"/> (mean ± std over seeds), with notes, written as
/// Markdown, JSON and a chart.
/// </summary>
public sealed class PaperTable
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Creates a table; rows may leave columns out.</summary>
    /// <exception cref="ArgumentException">The name, the columns or the rows are empty, or a row names an unknown column.</exception>
    public PaperTable(string name, string title, IReadOnlyList<string> columns, IReadOnlyList<PaperRow> rows, IReadOnlyList<string>? notes = null)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("A table needs a name (its file name).", nameof(name));
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentNullException.ThrowIfNull(rows);
        if (columns.Count == 0) throw new ArgumentException($"Table '{name}' has no columns.", nameof(columns));
        if (rows.Count == 0) throw new ArgumentException($"Table '{name}' has no rows.", nameof(rows));
        if (columns.Distinct(StringComparer.Ordinal).Count() != columns.Count) throw new ArgumentException($"Table '{name}' repeats a column name.", nameof(columns));
        foreach (var r in rows)
            foreach (var c in r.Cells.Keys)
                if (!columns.Contains(c)) throw new ArgumentException($"Row '{r.Label}' of table '{name}' has a value for unknown column '{c}'.", nameof(rows));
        Name = name;
        Title = title ?? name;
        Columns = columns.ToArray();
        Rows = rows.ToArray();
        Notes = notes?.ToArray() ?? [];
    }

    /// <summary>File name stem (<c>stories</c> → stories.md, stories.json, stories.png).</summary>
    [JsonPropertyName("name")] public string Name { get; }

    /// <summary>Heading.</summary>
    [JsonPropertyName("title")] public string Title { get; }

    /// <summary>Column names (metrics).</summary>
    [JsonPropertyName("columns")] public IReadOnlyList<string> Columns { get; }

    /// <summary>Rows (methods, settings).</summary>
    [JsonPropertyName("rows")] public IReadOnlyList<PaperRow> Rows { get; }

    /// <summary>What was measured and how (printed under the table).</summary>
    [JsonPropertyName("notes")] public IReadOnlyList<string> Notes { get; }

    /// <summary>Seconds the experiment took (its own evaluation plus the trainings only it needed).</summary>
    [JsonPropertyName("seconds")] public double Seconds { get; init; }

    /// <summary>How the chart is drawn.</summary>
    [JsonIgnore] public PaperChartKind ChartKind { get; init; } = PaperChartKind.Bars;

    /// <summary>Columns drawn in the chart (null: the first column).</summary>
    [JsonIgnore] public IReadOnlyList<string>? ChartColumns { get; init; }

    /// <summary>Y-axis label of the chart.</summary>
    [JsonIgnore] public string? ChartYLabel { get; init; }

    /// <summary>X-axis label of a line chart.</summary>
    [JsonIgnore] public string? ChartXLabel { get; init; }

    /// <summary>The cell of <paramref name="row"/> × <paramref name="column"/>, or null.</summary>
    public PaperCell? Cell(string row, string column) =>
        Rows.FirstOrDefault(r => r.Label == row)?.Cells.GetValueOrDefault(column);

    /// <summary>The table as Markdown: heading, the table (mean ± std over seeds), then the notes.</summary>
    public string ToMarkdown(int digits = 3)
    {
        var sb = new StringBuilder();
        sb.Append("## ").Append(Title).Append("\n\n");
        sb.Append("| ").Append(Escape("")).Append(" | ").Append(string.Join(" | ", Columns.Select(Escape))).Append(" |\n");
        sb.Append("|---|").Append(string.Concat(Columns.Select(_ => "---|"))).Append('\n');
        foreach (var r in Rows)
        {
            sb.Append("| ").Append(Escape(r.Label));
            foreach (var c in Columns) sb.Append(" | ").Append(r.Cells.TryGetValue(c, out var cell) ? cell.Format(digits) : "–");
            sb.Append(" |\n");
        }
        if (Notes.Count > 0)
        {
            sb.Append('\n');
            foreach (var n in Notes) sb.Append("- ").Append(n).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The table as indented JSON (name, title, columns, rows with mean/std/n/values per cell, notes, seconds).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Writes <c>Name.md</c>, <c>Name.json</c> and <c>Name.png</c> into <paramref name="folder"/> atomically; returns the three paths.</summary>
    public IReadOnlyList<string> Save(string folder)
    {
        Directory.CreateDirectory(folder);
        string md = Path.Combine(folder, Name + ".md"), json = Path.Combine(folder, Name + ".json"), png = Path.Combine(folder, Name + ".png");
        WriteText(md, ToMarkdown());
        WriteText(json, ToJson() + "\n");
        SaveChart(png);
        return [md, json, png];
    }

    /// <summary>Draws the chart (bars or lines of the charted columns, ± std) to <paramref name="path"/>.</summary>
    public void SaveChart(string path)
    {
        var cols = ChartColumns ?? [Columns[0]];
        var options = new ChartOptions { Title = Title, YLabel = ChartYLabel ?? (cols.Count == 1 ? cols[0] : null), XLabel = ChartXLabel, Width = 800, Height = 450 };
        if (ChartKind == PaperChartKind.LinesByRow)
        {
            var x = Rows.Select((r, i) => TrailingNumber(r.Label) ?? i + 1).ToArray();
            var series = new List<PlotSeries>();
            foreach (var c in cols)
            {
                var pts = Rows.Select((r, i) => (X: x[i], Cell: r.Cells.GetValueOrDefault(c))).Where(p => p.Cell is not null && double.IsFinite(p.Cell.Mean)).ToList();
                if (pts.Count > 0) series.Add(new PlotSeries(c, pts.Select(p => p.X).ToArray(), pts.Select(p => p.Cell!.Mean).ToArray()));
            }
            if (series.Count > 0)
            {
                MetricPlots.SaveLineChart(path, series, options);
                return;
            }
        }
        if (ChartKind == PaperChartKind.Lines)
        {
            var x = cols.Select((c, i) => TrailingNumber(c) ?? i + 1).ToArray();
            var series = new List<PlotSeries>();
            foreach (var r in Rows)
            {
                var pts = cols.Select((c, i) => (X: x[i], Cell: r.Cells.GetValueOrDefault(c))).Where(p => p.Cell is not null && double.IsFinite(p.Cell.Mean)).ToList();
                if (pts.Count > 0) series.Add(new PlotSeries(r.Label, pts.Select(p => p.X).ToArray(), pts.Select(p => p.Cell!.Mean).ToArray()));
            }
            if (series.Count > 0)
            {
                MetricPlots.SaveLineChart(path, series, options);
                return;
            }
        }
        var bars = new List<PlotBar>();
        foreach (var c in cols)
            foreach (var r in Rows)
                if (r.Cells.TryGetValue(c, out var cell) && double.IsFinite(cell.Mean))
                {
                    double std = double.IsFinite(cell.Std) ? cell.Std : 0;
                    bars.Add(PlotBar.WithStd(cols.Count == 1 ? r.Label : $"{r.Label} / {c}", cell.Mean, std));
                }
        if (bars.Count == 0) bars.Add(PlotBar.Plain("no finite values", 0));
        MetricPlots.SaveBarChart(path, bars, options);
    }

    private static double? TrailingNumber(string s)
    {
        int end = s.Length;
        while (end > 0 && !char.IsDigit(s[end - 1])) end--;
        int start = end;
        while (start > 0 && char.IsDigit(s[start - 1])) start--;
        return start < end && double.TryParse(s.AsSpan(start, end - start), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : null;
    }

    private static string Escape(string s) => s.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);

    internal static void WriteText(string path, string text) =>
        AtomicFile.Write(path, s => { using var w = new StreamWriter(s, new UTF8Encoding(false), leaveOpen: true); w.Write(text); });
}

/// <summary>Collects one value per seed for each (row, column) and builds a <see cref="PaperTable"/>.</summary>
public sealed class PaperTableBuilder
{
    private readonly List<string> _rows = new();
    private readonly List<string> _columns;
    private readonly Dictionary<(string Row, string Column), List<double>> _values = new();

    /// <summary>Starts a table with these columns (in order).</summary>
    public PaperTableBuilder(string name, string title, params string[] columns)
    {
        Name = name;
        Title = title;
        _columns = columns.ToList();
    }

    /// <summary>File name stem.</summary>
    public string Name { get; }

    /// <summary>Heading.</summary>
    public string Title { get; }

    /// <summary>Notes printed under the table.</summary>
    public List<string> Notes { get; } = new();

    /// <summary>Adds this seed's <paramref name="value"/> to a cell (rows appear in the order first added).</summary>
    /// <exception cref="ArgumentException">The column is not one of the table's.</exception>
    public void Add(string row, string column, double value)
    {
        if (!_columns.Contains(column)) throw new ArgumentException($"Table '{Name}' has no column '{column}' (columns: {string.Join(", ", _columns)}).", nameof(column));
        if (!_rows.Contains(row)) _rows.Add(row);
        if (!_values.TryGetValue((row, column), out var list)) _values[(row, column)] = list = new List<double>();
        list.Add(value);
    }

    /// <summary>The table with mean ± std per cell.</summary>
    public PaperTable Build(double seconds = 0, PaperChartKind chart = PaperChartKind.Bars, IReadOnlyList<string>? chartColumns = null, string? yLabel = null, string? xLabel = null)
    {
        var rows = _rows.Select(r => new PaperRow(r, _columns.Where(c => _values.ContainsKey((r, c))).ToDictionary(c => c, c => PaperCell.Of(_values[(r, c)])))).ToList();
        return new PaperTable(Name, Title, _columns, rows, Notes)
        {
            Seconds = Math.Round(seconds, 1), ChartKind = chart, ChartColumns = chartColumns, ChartYLabel = yLabel, ChartXLabel = xLabel,
        };
    }
}
