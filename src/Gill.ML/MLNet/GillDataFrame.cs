using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.MLNet;

/// <summary>
/// Turns an <see cref="IDataView"/> of Gill outputs into a <see cref="DataFrame"/> (for notebooks and quick inspection).
/// A <see cref="DataFrame"/> is itself an <see cref="IDataView"/>, so it can also be the input of any Gill stage.
/// </summary>
public static class GillDataFrame
{
    /// <summary>
    /// Reads the visible columns of <paramref name="data"/> (or only <paramref name="columns"/>) into a new
    /// <see cref="DataFrame"/>. Float vectors become <see cref="VBufferDataFrameColumn{T}"/> columns, or one
    /// <c>Name[i]</c> column per element when <paramref name="expandVectors"/> is set; keys with value names become text
    /// columns holding the names; image columns are skipped.
    /// </summary>
    /// <param name="data">The data.</param>
    /// <param name="maxRows">Maximum number of rows read (-1: all).</param>
    /// <param name="expandVectors">Expand float vectors into one column per element.</param>
    /// <param name="columns">Columns to read (null: all visible, non-image columns).</param>
    /// <exception cref="ArgumentException">A requested column is missing or has a type a data frame cannot hold.</exception>
    public static DataFrame ToDataFrame(IDataView data, long maxRows = -1, bool expandVectors = false, IEnumerable<string>? columns = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        var schema = data.Schema;
        List<DataViewSchema.Column> selected;
        if (columns is null)
        {
            selected = schema.Where(c => !c.IsHidden && IsSupported(c.Type)).ToList();
        }
        else
        {
            selected = new();
            foreach (var name in columns)
            {
                var c = schema.GetColumnOrNull(name) ?? throw new ArgumentException($"Column '{name}' is not in the data (columns: {string.Join(", ", schema.Where(x => !x.IsHidden).Select(x => x.Name))}).", nameof(columns));
                if (!IsSupported(c.Type)) throw new ArgumentException($"Column '{name}' has type {GillColumn.DescribeType(c.Type)}, which a DataFrame cannot hold.", nameof(columns));
                selected.Add(c);
            }
        }
        var readers = selected.Select(c => Reader.Create(c, expandVectors)).ToList();
        using (var cursor = data.GetRowCursor(selected))
        {
            foreach (var r in readers) r.Bind(cursor);
            long n = 0;
            while ((maxRows < 0 || n < maxRows) && cursor.MoveNext())
            {
                foreach (var r in readers) r.Append();
                n++;
            }
        }
        return new DataFrame(readers.SelectMany(r => r.Columns));
    }

    private static bool IsSupported(DataViewType t) => t switch
    {
        VectorDataViewType v => v.ItemType == NumberDataViewType.Single,
        KeyDataViewType => true,
        TextDataViewType or BooleanDataViewType => true,
        _ => t == NumberDataViewType.Single || t == NumberDataViewType.Double || t == NumberDataViewType.Int32 || t == NumberDataViewType.Int64 || t == NumberDataViewType.UInt32,
    };

    private abstract class Reader
    {
        public abstract IEnumerable<DataFrameColumn> Columns { get; }

        public abstract void Bind(DataViewRowCursor cursor);

        public abstract void Append();

        public static Reader Create(DataViewSchema.Column c, bool expand) => c.Type switch
        {
            VectorDataViewType v when expand && v.IsKnownSize => new ExpandedVector(c, v.Size),
            VectorDataViewType => new Vector(c),
            KeyDataViewType => new Key(c),
            TextDataViewType => new Text(c),
            BooleanDataViewType => new Scalar<bool>(c),
            _ when c.Type == NumberDataViewType.Single => new Scalar<float>(c),
            _ when c.Type == NumberDataViewType.Double => new Scalar<double>(c),
            _ when c.Type == NumberDataViewType.Int32 => new Scalar<int>(c),
            _ when c.Type == NumberDataViewType.Int64 => new Scalar<long>(c),
            _ => new Scalar<uint>(c),
        };
    }

    private sealed class Scalar<T> : Reader where T : unmanaged
    {
        private readonly DataViewSchema.Column _c;
        private readonly PrimitiveDataFrameColumn<T> _col;
        private ValueGetter<T>? _g;

        public Scalar(DataViewSchema.Column c)
        {
            _c = c;
            _col = new PrimitiveDataFrameColumn<T>(c.Name);
        }

        public override IEnumerable<DataFrameColumn> Columns => new[] { _col };
        public override void Bind(DataViewRowCursor cursor) => _g = cursor.GetGetter<T>(_c);
        public override void Append()
        {
            T v = default;
            _g!(ref v);
            _col.Append(v);
        }
    }

    private sealed class Text : Reader
    {
        private readonly DataViewSchema.Column _c;
        private readonly StringDataFrameColumn _col;
        private ValueGetter<ReadOnlyMemory<char>>? _g;

        public Text(DataViewSchema.Column c)
        {
            _c = c;
            _col = new StringDataFrameColumn(c.Name, 0);
        }

        public override IEnumerable<DataFrameColumn> Columns => new[] { _col };
        public override void Bind(DataViewRowCursor cursor) => _g = cursor.GetGetter<ReadOnlyMemory<char>>(_c);
        public override void Append()
        {
            ReadOnlyMemory<char> v = default;
            _g!(ref v);
            _col.Append(v.ToString());
        }
    }

    private sealed class Key : Reader
    {
        private readonly DataViewSchema.Column _c;
        private readonly DataFrameColumn _col;
        private readonly string[]? _names;
        private ValueGetter<uint>? _g;

        public Key(DataViewSchema.Column c)
        {
            _c = c;
            if (c.Annotations.Schema.GetColumnOrNull("KeyValues") is { Type: VectorDataViewType { ItemType: TextDataViewType } } kv)
            {
                VBuffer<ReadOnlyMemory<char>> values = default;
                c.Annotations.GetValue(kv.Name, ref values);
                _names = values.DenseValues().Select(m => m.ToString()).ToArray();
            }
            _col = _names is null ? new PrimitiveDataFrameColumn<uint>(c.Name) : new StringDataFrameColumn(c.Name, 0);
            if (c.Type.RawType != typeof(uint)) throw new ArgumentException($"Key column '{c.Name}' has raw type {c.Type.RawType.Name}; only UInt32 keys are supported.");
        }

        public override IEnumerable<DataFrameColumn> Columns => new[] { _col };
        public override void Bind(DataViewRowCursor cursor) => _g = cursor.GetGetter<uint>(_c);
        public override void Append()
        {
            uint v = 0;
            _g!(ref v);
            if (_col is StringDataFrameColumn s) s.Append(v == 0 || v > _names!.Length ? null : _names[v - 1]);
            else ((PrimitiveDataFrameColumn<uint>)_col).Append(v);
        }
    }

    private sealed class Vector : Reader
    {
        private readonly DataViewSchema.Column _c;
        private readonly VBufferDataFrameColumn<float> _col;
        private ValueGetter<VBuffer<float>>? _g;

        public Vector(DataViewSchema.Column c)
        {
            _c = c;
            _col = new VBufferDataFrameColumn<float>(c.Name, 0);
        }

        public override IEnumerable<DataFrameColumn> Columns => new[] { _col };
        public override void Bind(DataViewRowCursor cursor) => _g = cursor.GetGetter<VBuffer<float>>(_c);
        public override void Append()
        {
            VBuffer<float> v = default;
            _g!(ref v);
            _col.Append(v);
        }
    }

    private sealed class ExpandedVector : Reader
    {
        private readonly DataViewSchema.Column _c;
        private readonly PrimitiveDataFrameColumn<float>[] _cols;
        private ValueGetter<VBuffer<float>>? _g;
        private VBuffer<float> _v;

        public ExpandedVector(DataViewSchema.Column c, int size)
        {
            _c = c;
            _cols = Enumerable.Range(0, size).Select(i => new PrimitiveDataFrameColumn<float>($"{c.Name}[{i}]")).ToArray();
        }

        public override IEnumerable<DataFrameColumn> Columns => _cols;
        public override void Bind(DataViewRowCursor cursor) => _g = cursor.GetGetter<VBuffer<float>>(_c);
        public override void Append()
        {
            _g!(ref _v);
            int i = 0;
            foreach (var x in _v.DenseValues()) _cols[i++].Append(x);
        }
    }
}
